# METADATA
# title: Personal data and secrets
# description: |
#   Finds e-mail addresses, phone numbers, card numbers (Luhn checked) and
#   API-key-shaped secrets (sk-..., AKIA..., ghp_..., private keys, JWTs)
#   with the Go builtin portcullis.pii, and flags, denies or redacts them.
#   Configured in data.portcullis.pii (nothing configured: no scanning):
#     actions {<type or kind>: flag|deny|redact|off}
#       types: email, phone, card, secret; kinds refine secret: openai,
#       anthropic, aws_access_key, github, slack, google_api_key, stripe,
#       private_key, jwt (a kind's action wins over its type's)
#     teams.<team_id>.actions  overrides per team
#     roles                    message roles scanned (user, system, tool)
#     response_actions         {<type or kind>: flag|deny} on the output
package gateway.pii

base_actions := a if {
	a := data.portcullis.pii.actions
} else := {}

team_actions := a if {
	a := data.portcullis.pii.teams[input.principal.team_id].actions
} else := {}

actions := object.union(base_actions, team_actions)

roles := {r | some r in data.portcullis.pii.roles} if {
	data.portcullis.pii.roles
} else := {"user", "system", "tool"}

# action_for(acts, f) is what finding f triggers.
action_for(acts, f) := a if {
	a := acts[f.kind]
} else := a if {
	a := acts[f.type]
} else := "off"

# findings are what the messages of the scanned roles contain:
# [{message, type, kind, match, start, end}]. One Go call scans them all.
findings := portcullis.pii_scan(input.llm.messages, roles) if {
	count(actions) > 0
} else := []

acted[action_for(actions, f)] contains [f.message, f.type, f.kind] if some f in findings

deny contains {
	"code": code(t), "status": 400,
	"message": sprintf("Message %d contains %s; remove it and try again.", [i, label(t, k)]),
} if some [i, t, k] in acted.deny

code("secret") := "secret_detected"

code(t) := "pii_detected" if t != "secret"

label("secret", k) := sprintf("a secret (%s)", [k])

label(t, _) := sprintf("personal data (%s)", [t]) if t != "secret"

tags contains sprintf("pii:%s", [k]) if {
	some a in {"flag", "redact", "deny"}
	some [_, _, k] in acted[a]
}

redactions contains {"path": m.path, "find": f.match, "replace": sprintf("[REDACTED_%s]", [upper(f.kind)])} if {
	some f in findings
	action_for(actions, f) == "redact"
	m := input.llm.messages[f.message]
}

# --- response phase -------------------------------------------------------

response_actions := a if {
	a := data.portcullis.pii.response_actions
} else := {}

response_findings contains f if {
	count(response_actions) > 0
	some f in portcullis.pii(input.response.text)
}

response_deny contains {
	"code": code(f.type), "status": 502,
	"message": sprintf("The response contained %s and was stopped.", [label(f.type, f.kind)]),
} if {
	some f in response_findings
	action_for(response_actions, f) == "deny"
}

response_tags contains sprintf("pii_out:%s", [f.kind]) if {
	some f in response_findings
	action_for(response_actions, f) in {"flag", "deny"}
}
