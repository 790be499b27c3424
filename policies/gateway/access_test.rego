package gateway.access_test

import data.gateway.access

# Example data: the shape of data.portcullis.access.
access_data := {
	"teams": {
		"t-eu": {
			"models": ["gpt-4o*", "claude-*", "anthropic/*"],
			"providers": ["azure", "anthropic"],
			"regions": ["eu"],
			"model_map": {"gpt-4o": "gpt-4o-mini"},
		},
		"t-office": {"hours": {"tz": "Europe/Berlin", "from": 8, "to": 18, "days": ["Mon", "Tue", "Wed", "Thu", "Fri"]}},
		"t-night": {"hours": {"from": 22, "to": 6}},
		"t-meta": {"regions": ["us"]},
	},
	"keys": {"ci-bot": {"models": ["gpt-4o-mini"]}},
	"default": {"models": ["gpt-4o-mini", "llama-*"]},
	"region_metadata": "region",
}

# Monday 2025-01-06 10:00 UTC (11:00 in Berlin).
monday_10 := time.parse_rfc3339_ns("2025-01-06T10:00:00Z")

# Saturday 2025-01-11 10:00 UTC.
saturday_10 := time.parse_rfc3339_ns("2025-01-11T10:00:00Z")

req(principal, llm, headers, t) := {
	"request": {"time_ns": t, "headers": headers},
	"principal": principal,
	"llm": llm,
}

eu(model) := req({"team_id": "t-eu"}, {"model": model, "providers": ["azure"]}, {"x-region": "EU"}, monday_10)

codes(ds) := {d.code | some d in ds}

test_nothing_configured_allows_everything if {
	count(access.deny) == 0 with input as eu("anything") with data.portcullis.access as {}
}

test_minimal_input_is_allowed if {
	count(access.deny) == 0 with input as {} with data.portcullis.access as access_data
}

test_team_model_glob if {
	count(access.deny) == 0 with input as eu("gpt-4o-mini") with data.portcullis.access as access_data
	count(access.deny) == 0 with input as eu("claude-3-5-sonnet") with data.portcullis.access as access_data
}

test_team_model_denied if {
	d := access.deny with input as eu("o1-preview") with data.portcullis.access as access_data
	codes(d) == {"model_not_allowed"}
	some r in d
	r.status == 403
	contains(r.message, "team t-eu")
	contains(r.message, "o1-preview")
}

test_glob_does_not_cross_slash if {
	# "claude-*" must not admit "claude-x/other"; "anthropic/*" admits one level.
	"model_not_allowed" in codes(access.deny) with input as eu("claude-x/other") with data.portcullis.access as access_data
}

test_key_profile_wins_over_team if {
	i := req({"team_id": "t-eu", "key_alias": "ci-bot"}, {"model": "claude-3"}, {}, monday_10)
	d := access.deny with input as i with data.portcullis.access as access_data
	codes(d) == {"model_not_allowed"}
	some r in d
	contains(r.message, "key ci-bot")
}

test_default_profile if {
	i := req({"team_id": "unknown"}, {"model": "gpt-4o"}, {}, monday_10)
	d := access.deny with input as i with data.portcullis.access as access_data
	some r in d
	r.message == "this caller may not use model gpt-4o"
	count(access.deny) == 0 with input as req({}, {"model": "llama-3"}, {}, monday_10) with data.portcullis.access as access_data
}

test_model_override if {
	access.model_override == "gpt-4o-mini" with input as eu("gpt-4o") with data.portcullis.access as access_data
	not access.model_override with input as eu("gpt-4o-mini") with data.portcullis.access as access_data
}

test_provider_of_group_not_allowed if {
	i := req({"team_id": "t-eu"}, {"model": "gpt-4o", "providers": ["azure", "openai"]}, {"x-region": "eu"}, monday_10)
	d := access.deny with input as i with data.portcullis.access as access_data
	codes(d) == {"provider_not_allowed"}
	some r in d
	contains(r.message, "provider openai")
}

test_provider_served_and_prefix if {
	served := req({"team_id": "t-eu"}, {"model": "gpt-4o", "provider": "openai"}, {"x-region": "eu"}, monday_10)
	"provider_not_allowed" in codes(access.deny) with input as served with data.portcullis.access as access_data
	prefixed := req({"team_id": "t-eu"}, {"model": "anthropic/claude-3"}, {"x-region": "eu"}, monday_10)
	count(access.deny) == 0 with input as prefixed with data.portcullis.access as access_data
}

test_provider_unknown if {
	i := req({"team_id": "t-eu"}, {"model": "gpt-4o"}, {"x-region": "eu"}, monday_10)
	codes(access.deny) == {"provider_unknown"} with input as i with data.portcullis.access as access_data
}

test_office_hours if {
	office := req({"team_id": "t-office"}, {"model": "m"}, {}, monday_10)
	count(access.deny) == 0 with input as office with data.portcullis.access as access_data

	weekend := req({"team_id": "t-office"}, {"model": "m"}, {}, saturday_10)
	d := access.deny with input as weekend with data.portcullis.access as access_data
	codes(d) == {"outside_hours"}

	# 17:30 UTC is 18:30 in Berlin: after hours.
	late := req({"team_id": "t-office"}, {"model": "m"}, {}, time.parse_rfc3339_ns("2025-01-06T17:30:00Z"))
	codes(access.deny) == {"outside_hours"} with input as late with data.portcullis.access as access_data

	# 06:30 UTC is 07:30 in Berlin: before hours.
	early := req({"team_id": "t-office"}, {"model": "m"}, {}, time.parse_rfc3339_ns("2025-01-06T06:30:00Z"))
	codes(access.deny) == {"outside_hours"} with input as early with data.portcullis.access as access_data
}

at(hhmm) := req({"team_id": "t-night"}, {"model": "m"}, {}, time.parse_rfc3339_ns(sprintf("2025-01-06T%s:00Z", [hhmm])))

test_overnight_window if {
	count(access.deny) == 0 with input as at("23:00") with data.portcullis.access as access_data
	count(access.deny) == 0 with input as at("05:59") with data.portcullis.access as access_data
	codes(access.deny) == {"outside_hours"} with input as at("06:00") with data.portcullis.access as access_data
	codes(access.deny) == {"outside_hours"} with input as at("21:59") with data.portcullis.access as access_data
}

test_region_from_header if {
	count(access.deny) == 0 with input as eu("gpt-4o-mini") with data.portcullis.access as access_data
	us := req({"team_id": "t-eu"}, {"model": "gpt-4o-mini", "providers": ["azure"]}, {"x-region": "us"}, monday_10)
	d := access.deny with input as us with data.portcullis.access as access_data
	codes(d) == {"region_not_allowed"}
}

test_region_from_metadata if {
	i := req({"team_id": "t-meta"}, {"model": "m", "metadata": {"region": "US"}}, {}, monday_10)
	count(access.deny) == 0 with input as i with data.portcullis.access as access_data
}

test_region_required if {
	i := req({"team_id": "t-meta"}, {"model": "m"}, {}, monday_10)
	codes(access.deny) == {"region_required"} with input as i with data.portcullis.access as access_data
}

test_region_header_setting if {
	cfg := object.union(access_data, {"region_header": "X-Zone"})
	i := req({"team_id": "t-meta"}, {"model": "m"}, {"x-zone": "us"}, monday_10)
	count(access.deny) == 0 with input as i with data.portcullis.access as cfg
}
