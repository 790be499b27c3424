# METADATA
# title: Gateway decision
# description: |
#   The entry points the gateway evaluates: decision (request phase) and
#   response_decision (output, when response rules are configured). They
#   combine the access, content and PII packages; both are defined for
#   any input, so a request is only ever refused for a reason.
package gateway

import data.gateway.access
import data.gateway.content
import data.gateway.pii

# Each package is evaluated only when its data is configured, so a
# gateway without data.portcullis pays for one lookup per request. Each
# rule evaluated costs more than the expressions in it, so the common
# case, a request nothing applies to, is decided by two rules (denied and
# adjusted) and answered with the constant allow_all; the full decision is
# assembled only when there is something to say.

# decision is the request-phase answer. Reasons and tags are sets; the
# gateway sorts them.
decision := allow_all if {
	not data.portcullis
} else := allow_all if {
	not denied
	not adjusted
} else := {
	"allow": true,
	"status": 200,
	"reasons": set(),
	"mutations": mutations,
	"headers": headers,
	"tags": tags,
} if {
	not denied
} else := {
	"allow": false,
	"status": status,
	"reasons": denials,
	"mutations": mutations,
	"headers": headers,
	"tags": tags,
}

allow_all := {"allow": true, "status": 200, "reasons": set(), "mutations": {}, "headers": {}, "tags": set()}

# denied: some package denies the request.
denied if {
	data.portcullis.access
	some _ in access.deny
}

denied if {
	data.portcullis.content
	some _ in content.deny
}

denied if {
	data.portcullis.pii
	some _ in pii.deny
}

# adjusted: the decision carries a mutation or a tag (and so maybe a
# header).
adjusted if count(mutations) > 0

adjusted if count(tags) > 0

denials contains r if {
	data.portcullis.access
	some r in access.deny
}

denials contains r if {
	data.portcullis.content
	some r in content.deny
}

denials contains r if {
	data.portcullis.pii
	some r in pii.deny
}

# status is the highest status among the reasons, 200 without any.
status := max({r.status | some r in denials}) if {
	count(denials) > 0
} else := 200

tags contains t if {
	data.portcullis.content
	some t in content.tags
}

tags contains t if {
	data.portcullis.pii
	some t in pii.tags
}

tags contains sprintf("route:%s", [m]) if {
	data.portcullis.access
	m := access.model_override
}

mutations["model"] := m if {
	data.portcullis.access
	m := access.model_override
}

mutations["max_tokens"] := n if {
	data.portcullis.content
	n := content.max_tokens
}

mutations["redact"] := sort(redactions) if count(redactions) > 0

redactions contains r if {
	data.portcullis.content.rules
	some r in content.redactions
}

redactions contains r if {
	data.portcullis.pii
	some r in pii.redactions
}

# headers tell the client what was flagged, when
# data.portcullis.flags_header names a header for it.
headers[h] := concat(",", sort(tags)) if {
	h := data.portcullis.flags_header
	count(tags) > 0
}

# --- response phase -------------------------------------------------------

response_denials := content.response_deny | pii.response_deny

response_tags := content.response_tags | pii.response_tags

response_decision := {
	"allow": count(response_denials) == 0,
	"status": response_status,
	"reasons": response_denials,
	"headers": response_headers,
	"tags": response_tags,
}

response_status := max({r.status | some r in response_denials}) if {
	count(response_denials) > 0
} else := 200

response_headers[h] := concat(",", sort(response_tags)) if {
	h := data.portcullis.flags_header
	count(response_tags) > 0
}

# response_enabled is read when the revision loads: without response
# rules configured the gateway skips the response phase (and streams are
# not held back in windows).
default response_enabled := false

response_enabled if count(content.response_rules) > 0

response_enabled if count(pii.response_actions) > 0

# pattern_sets are the rule sets compiled when the revision loads.
pattern_sets := content.pattern_sets
