# METADATA
# title: Team and key access
# description: |
#   Which models and providers a caller may use, when, and from where.
#   Configured in data.portcullis.access (all optional; nothing configured
#   allows everything):
#     keys.<key_alias>  a profile for one virtual key (wins over its team's)
#     teams.<team_id>   a profile for a team
#     default           the profile of callers with neither
#     region_header     request header naming the caller's region (x-region)
#     region_metadata   request metadata key naming it (region)
#   A profile: models and providers (glob patterns, "*" does not cross
#   "/"), hours {tz, from, to, days}, regions, model_map (requested model →
#   model group to route to instead).
package gateway.access

# profile is the configuration that applies to the caller.
profile := p if {
	p := data.portcullis.access.keys[input.principal.key_alias]
} else := p if {
	p := data.portcullis.access.teams[input.principal.team_id]
} else := data.portcullis.access["default"]

# who names the caller in messages.
who := sprintf("key %s", [input.principal.key_alias]) if {
	data.portcullis.access.keys[input.principal.key_alias]
} else := sprintf("team %s", [input.principal.team_id]) if {
	data.portcullis.access.teams[input.principal.team_id]
} else := "this caller"

# --- models ---------------------------------------------------------------

deny contains {
	"code": "model_not_allowed", "status": 403,
	"message": sprintf("%s may not use model %s", [who, input.llm.model]),
} if {
	models := profile.models
	not portcullis.glob_any(models, input.llm.model)
}

# model_override routes the request to another model group.
model_override := profile.model_map[input.llm.model]

# --- providers ------------------------------------------------------------

# The providers that may serve the request: the model group's (when the
# gateway knows them), the one that served (response phase), or the
# prefix of a "provider/model" name.
candidates := input.llm.providers if {
	count(input.llm.providers) > 0
} else := [input.llm.provider] if {
	input.llm.provider != ""
} else := [split(input.llm.model, "/")[0]] if {
	contains(input.llm.model, "/")
}

deny contains {
	"code": "provider_not_allowed", "status": 403,
	"message": sprintf("%s may not use provider %s (model %s)", [who, p, input.llm.model]),
} if {
	providers := profile.providers
	not portcullis.glob_all(providers, candidates)
	some p in candidates
	not portcullis.glob_any(providers, p)
}

deny contains {
	"code": "provider_unknown", "status": 403,
	"message": sprintf("%s is limited to providers %v; the provider of model %s is not known", [who, profile.providers, input.llm.model]),
} if {
	profile.providers
	not candidates
}

# --- time windows ---------------------------------------------------------

deny contains {
	"code": "outside_hours", "status": 403,
	"message": sprintf("%s may use the gateway only %s", [who, hours_text]),
} if {
	hours := profile.hours
	not portcullis.within_hours(hours, input.request.time_ns)
}

tz := object.get(profile.hours, "tz", "UTC")

hours_text := sprintf("from %v to %v h (%s) on %v", [
	object.get(profile.hours, "from", 0), object.get(profile.hours, "to", 24), tz,
	object.get(profile.hours, "days", "any day"),
])

# --- regions --------------------------------------------------------------

# region is the caller's region, lower-cased: the header's, else the
# metadata's.
region := lower(input.request.headers[header_name]) if {
	header_name := header_setting
	input.request.headers[header_name] != ""
} else := lower(input.llm.metadata[metadata_key]) if {
	metadata_key := metadata_setting
	is_string(input.llm.metadata[metadata_key])
}

header_setting := h if {
	h := lower(data.portcullis.access.region_header)
} else := "x-region"

metadata_setting := k if {
	k := data.portcullis.access.region_metadata
} else := "region"

deny contains {
	"code": "region_required", "status": 403,
	"message": sprintf("%s must name its region (header %s or metadata %s)", [who, header_setting, metadata_setting]),
} if {
	profile.regions
	not region
}

deny contains {
	"code": "region_not_allowed", "status": 403,
	"message": sprintf("%s may not call from region %s", [who, r]),
} if {
	regions := profile.regions
	r := region
	not r in regions
	not r in {lower(x) | some x in regions}
}
