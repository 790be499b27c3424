# METADATA
# title: Content rules
# description: |
#   Deny, flag or redact prompt text that matches content rules; block
#   topics; cap the prompt size and max_tokens. Configured in
#   data.portcullis.content (all optional; nothing configured allows
#   everything):
#     rules.<id>   {pattern (RE2) | keywords [..], action deny|flag|redact|off
#                  (deny), message, roles [..] (user, system, tool),
#                  replace (redact: "[REDACTED]")}
#     topics.<id>  {keywords [..] | pattern, action (deny), message, roles}
#     max_prompt_bytes, max_tokens
#     teams.<team_id> {actions {<rule or topic id>: action}, max_prompt_bytes, max_tokens}
#   Matching runs in Go (portcullis.match / portcullis.find): rule sets are
#   compiled once per revision, results cached per message text.
package gateway.content

rules := r if {
	r := data.portcullis.content.rules
} else := {}

topics := t if {
	t := data.portcullis.content.topics
} else := {}

team := t if {
	t := data.portcullis.content.teams[input.principal.team_id]
} else := {}

# roles(r) is the set of message roles rule r applies to (the same
# default as portcullis.scan's).
roles(r) := {x | some x in r.roles} if {
	is_object(r)
	r.roles
} else := {"user", "system", "tool"}

# action(id) is what a hit of rule (or topic) id does for this caller:
# the team's override, the rule's action, or deny.
action(id) := a if {
	a := team.actions[id]
} else := a if {
	a := rule_or_topic(id).action
} else := "deny"

rule_or_topic(id) := rules[id]

rule_or_topic(id) := topics[id] if not rules[id]

# hits are [rule id, message index] pairs: the rule matched that message
# (of a role it applies to). One Go call scans every message.
hits := portcullis.scan(rules, input.llm.messages) if {
	count(rules) > 0
} else := []

topic_hits := portcullis.scan(topics, input.llm.messages) if {
	count(topics) > 0
} else := []

hit_ids[action(id)] contains id if some [id, _] in hits

topic_ids[action(id)] contains id if some [id, _] in topic_hits

message_of(id, fallback) := m if {
	m := rule_or_topic(id).message
	is_string(m)
} else := fallback

deny contains {
	"code": "content_blocked", "status": 400,
	"message": message_of(id, sprintf("The request matches content rule %s.", [id])),
} if some id in hit_ids.deny

deny contains {
	"code": "topic_blocked", "status": 400,
	"message": message_of(id, sprintf("The topic %s is not allowed.", [id])),
} if some id in topic_ids.deny

tags contains sprintf("flag:%s", [id]) if some id in hit_ids.flag

tags contains sprintf("flag:%s", [id]) if some id in topic_ids.flag

tags contains sprintf("redact:%s", [id]) if some id in hit_ids.redact

# redactions replace each match of a redact rule in the message it was
# found in.
redactions contains {"path": m.path, "find": f.match, "replace": replacement(f.id)} if {
	count(hit_ids.redact) > 0
	some [id, i] in hits
	id in hit_ids.redact
	m := input.llm.messages[i]
	some f in portcullis.find(rules, m.text)
	f.id == id
}

replacement(id) := r if {
	r := rules[id].replace
	is_string(r)
} else := "[REDACTED]"

# --- sizes ----------------------------------------------------------------

max_prompt_bytes := n if {
	n := team.max_prompt_bytes
} else := n if {
	n := data.portcullis.content.max_prompt_bytes
}

deny contains {
	"code": "prompt_too_large", "status": 413,
	"message": sprintf("The prompt has %d bytes of text; the limit is %d.", [input.llm.prompt_bytes, max_prompt_bytes]),
} if input.llm.prompt_bytes > max_prompt_bytes

# max_tokens caps the output; the gateway lowers the request's cap to it
# (never raises it).
max_tokens := n if {
	n := team.max_tokens
} else := n if {
	n := data.portcullis.content.max_tokens
}

# --- response phase -------------------------------------------------------

# Rules whose roles include "assistant" also check the model's output.
response_rules := {id: r | some id, r in rules; "assistant" in roles(r)}

response_hits contains id if {
	count(response_rules) > 0
	some id in portcullis.match(rules, input.response.text)
	id in object.keys(response_rules)
}

response_deny contains {
	"code": "content_blocked", "status": 400,
	"message": message_of(id, sprintf("The response matches content rule %s.", [id])),
} if {
	some id in response_hits
	action(id) == "deny"
}

response_tags contains sprintf("flag:%s", [id]) if {
	some id in response_hits
	action(id) == "flag"
}

# pattern_sets are compiled when the revision loads.
pattern_sets := [rules, topics]
