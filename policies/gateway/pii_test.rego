package gateway.pii_test

import data.gateway.pii

# Example data: the shape of data.portcullis.pii.
pii_data := {
	"actions": {"email": "redact", "phone": "flag", "card": "deny", "secret": "deny", "jwt": "flag"},
	"teams": {"support": {"actions": {"email": "off", "phone": "redact"}}},
	"response_actions": {"secret": "deny", "email": "flag"},
}

msg(team, role, text) := {
	"principal": {"team_id": team},
	"llm": {"messages": [{"role": role, "text": text, "path": "/messages/0/content"}]},
}

codes(ds) := {d.code | some d in ds}

test_nothing_configured_scans_nothing if {
	count(pii.findings) == 0 with input as msg("t", "user", "mail me at a@example.com") with data.portcullis.pii as {}
	count(pii.deny) == 0 with input as msg("t", "user", "sk-proj-abcdefghijklmnopqrstuvwxyz") with data.portcullis.pii as {}
}

test_minimal_input if {
	count(pii.deny) == 0 with input as {} with data.portcullis.pii as pii_data
}

test_clean if {
	i := msg("t", "user", "What's the weather in Paris on 2025-01-06 at 10:30?")
	count(pii.findings) == 0 with input as i with data.portcullis.pii as pii_data
}

test_email_redacted if {
	i := msg("t", "user", "write to jane.doe@example.com please")
	pii.redactions == {{"path": "/messages/0/content", "find": "jane.doe@example.com", "replace": "[REDACTED_EMAIL]"}} with input as i
		with data.portcullis.pii as pii_data
	pii.tags == {"pii:email"} with input as i with data.portcullis.pii as pii_data
	count(pii.deny) == 0 with input as i with data.portcullis.pii as pii_data
}

test_phone_flagged if {
	i := msg("t", "user", "call +49 30 1234567 or (555) 123-4567")
	pii.tags == {"pii:phone"} with input as i with data.portcullis.pii as pii_data
	count(pii.deny) == 0 with input as i with data.portcullis.pii as pii_data
	count(pii.findings) == 2 with input as i with data.portcullis.pii as pii_data
}

test_card_denied_with_luhn if {
	i := msg("t", "user", "my card is 4111 1111 1111 1111")
	d := pii.deny with input as i with data.portcullis.pii as pii_data
	d == {{"code": "pii_detected", "status": 400, "message": "Message 0 contains personal data (card); remove it and try again."}}

	# Not a valid card number (Luhn fails): not a card.
	count(pii.deny) == 0 with input as msg("t", "user", "order 4111 1111 1111 1112") with data.portcullis.pii as pii_data
}

test_secrets_denied if {
	some text in [
		"key sk-proj-Abcdefghijklmnopqrstuvwxyz012345",
		"AKIAIOSFODNN7EXAMPLE is my key",
		"token ghp_abcdefghijklmnopqrstuvwxyz0123456789",
		"-----BEGIN RSA PRIVATE KEY-----",
	]
	d := pii.deny with input as msg("t", "user", text) with data.portcullis.pii as pii_data
	codes(d) == {"secret_detected"}
}

test_secret_message_names_kind_not_value if {
	d := pii.deny with input as msg("t", "user", "AKIAIOSFODNN7EXAMPLE") with data.portcullis.pii as pii_data
	d == {{"code": "secret_detected", "status": 400, "message": "Message 0 contains a secret (aws_access_key); remove it and try again."}}
}

test_kind_action_wins_over_type if {
	jwt := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
	i := msg("t", "user", jwt)
	count(pii.deny) == 0 with input as i with data.portcullis.pii as pii_data
	pii.tags == {"pii:jwt"} with input as i with data.portcullis.pii as pii_data
}

test_team_override if {
	i := msg("support", "user", "jane@example.com, +1 555 123 4567")
	count(pii.deny) == 0 with input as i with data.portcullis.pii as pii_data
	pii.redactions == {{"path": "/messages/0/content", "find": "+1 555 123 4567", "replace": "[REDACTED_PHONE]"}} with input as i
		with data.portcullis.pii as pii_data
}

test_roles if {
	count(pii.findings) == 0 with input as msg("t", "assistant", "jane@example.com") with data.portcullis.pii as pii_data
	cfg := object.union(pii_data, {"roles": ["assistant"]})
	count(pii.findings) == 1 with input as msg("t", "assistant", "jane@example.com") with data.portcullis.pii as cfg
}

test_response_phase if {
	d := pii.response_deny with input as {"response": {"text": "use sk-ant-api03-abcdefghijklmnopqrstuvwxyz"}} with data.portcullis.pii as pii_data
	d == {{"code": "secret_detected", "status": 502, "message": "The response contained a secret (anthropic) and was stopped."}}
	pii.response_tags == {"pii_out:email"} with input as {"response": {"text": "mail bob@example.org"}} with data.portcullis.pii as pii_data
	count(pii.response_findings) == 0 with input as {"response": {"text": "bob@example.org"}} with data.portcullis.pii as {}
}

test_luhn_builtin if {
	portcullis.luhn("4111-1111-1111-1111")
	not portcullis.luhn("4111-1111-1111-1112")
	not portcullis.luhn("41x1")
}
