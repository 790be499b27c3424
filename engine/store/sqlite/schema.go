package sqlite

// migrations is the ordered schema history. Entry i is migration version
// i+1; each is applied once, in its own transaction, and recorded in
// schema_migrations. Never edit or reorder an entry that has shipped:
// append a new one.
//
// Types are chosen to carry over to PostgreSQL unchanged: BIGINT for money
// (nano-dollars), token counts and times (unix milliseconds, UTC; 0 or NULL
// means unset), INTEGER for booleans (0/1) and HTTP statuses, TEXT for
// strings and JSON documents.
var migrations = []string{
	// 1: keys, teams, users, spend_logs, audit_logs.
	`
CREATE TABLE keys (
	hash            TEXT    NOT NULL PRIMARY KEY,
	prefix          TEXT    NOT NULL DEFAULT '',
	key_alias       TEXT    NOT NULL DEFAULT '',
	team_id         TEXT    NOT NULL DEFAULT '',
	user_id         TEXT    NOT NULL DEFAULT '',
	models          TEXT    NOT NULL DEFAULT '[]',
	limits          TEXT    NOT NULL DEFAULT '{}',
	max_budget      BIGINT,
	soft_budget     BIGINT,
	budget_duration TEXT    NOT NULL DEFAULT '',
	budget_reset_at BIGINT,
	spend           BIGINT  NOT NULL DEFAULT 0,
	expires_at      BIGINT,
	blocked         INTEGER NOT NULL DEFAULT 0,
	metadata        TEXT,
	created_at      BIGINT  NOT NULL,
	updated_at      BIGINT  NOT NULL,
	created_by      TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX keys_team_id ON keys (team_id);
CREATE INDEX keys_user_id ON keys (user_id);
CREATE INDEX keys_budget_reset_at ON keys (budget_reset_at);

CREATE TABLE teams (
	team_id         TEXT    NOT NULL PRIMARY KEY,
	team_alias      TEXT    NOT NULL DEFAULT '',
	models          TEXT    NOT NULL DEFAULT '[]',
	limits          TEXT    NOT NULL DEFAULT '{}',
	max_budget      BIGINT,
	soft_budget     BIGINT,
	budget_duration TEXT    NOT NULL DEFAULT '',
	budget_reset_at BIGINT,
	spend           BIGINT  NOT NULL DEFAULT 0,
	blocked         INTEGER NOT NULL DEFAULT 0,
	members         TEXT    NOT NULL DEFAULT '[]',
	metadata        TEXT,
	created_at      BIGINT  NOT NULL,
	updated_at      BIGINT  NOT NULL
);
CREATE INDEX teams_budget_reset_at ON teams (budget_reset_at);

CREATE TABLE users (
	user_id         TEXT    NOT NULL PRIMARY KEY,
	user_email      TEXT    NOT NULL DEFAULT '',
	user_role       TEXT    NOT NULL DEFAULT '',
	models          TEXT    NOT NULL DEFAULT '[]',
	limits          TEXT    NOT NULL DEFAULT '{}',
	max_budget      BIGINT,
	soft_budget     BIGINT,
	budget_duration TEXT    NOT NULL DEFAULT '',
	budget_reset_at BIGINT,
	spend           BIGINT  NOT NULL DEFAULT 0,
	team_ids        TEXT    NOT NULL DEFAULT '[]',
	metadata        TEXT,
	created_at      BIGINT  NOT NULL,
	updated_at      BIGINT  NOT NULL
);
CREATE INDEX users_budget_reset_at ON users (budget_reset_at);

CREATE TABLE spend_logs (
	request_id         TEXT    NOT NULL PRIMARY KEY,
	key_hash           TEXT    NOT NULL DEFAULT '',
	key_alias          TEXT    NOT NULL DEFAULT '',
	team_id            TEXT    NOT NULL DEFAULT '',
	user_id            TEXT    NOT NULL DEFAULT '',
	model              TEXT    NOT NULL DEFAULT '',
	model_group        TEXT    NOT NULL DEFAULT '',
	deployment         TEXT    NOT NULL DEFAULT '',
	provider           TEXT    NOT NULL DEFAULT '',
	prompt_tokens      BIGINT  NOT NULL DEFAULT 0,
	completion_tokens  BIGINT  NOT NULL DEFAULT 0,
	cached_tokens      BIGINT  NOT NULL DEFAULT 0,
	cache_write_tokens BIGINT  NOT NULL DEFAULT 0,
	reasoning_tokens   BIGINT  NOT NULL DEFAULT 0,
	cost               BIGINT  NOT NULL DEFAULT 0,
	status             INTEGER NOT NULL DEFAULT 0,
	error_code         TEXT    NOT NULL DEFAULT '',
	start_time         BIGINT  NOT NULL,
	end_time           BIGINT  NOT NULL,
	cache_hit          INTEGER NOT NULL DEFAULT 0,
	tags               TEXT    NOT NULL DEFAULT '[]',
	prompt             TEXT,
	response           TEXT
);
CREATE INDEX spend_logs_start_time ON spend_logs (start_time);
CREATE INDEX spend_logs_key_hash_start_time ON spend_logs (key_hash, start_time);
CREATE INDEX spend_logs_team_id_start_time ON spend_logs (team_id, start_time);
CREATE INDEX spend_logs_user_id_start_time ON spend_logs (user_id, start_time);
CREATE INDEX spend_logs_model_start_time ON spend_logs (model, start_time);

CREATE TABLE audit_logs (
	id           TEXT   NOT NULL PRIMARY KEY,
	at           BIGINT NOT NULL,
	actor        TEXT   NOT NULL DEFAULT '',
	action       TEXT   NOT NULL DEFAULT '',
	object_type  TEXT   NOT NULL DEFAULT '',
	object_id    TEXT   NOT NULL DEFAULT '',
	before_value TEXT,
	after_value  TEXT
);
CREATE INDEX audit_logs_at ON audit_logs (at);
CREATE INDEX audit_logs_object ON audit_logs (object_type, object_id, at);
`,
	// 2: every spend_logs index is one more b-tree to update per spend
	// record, and the user index dirties a page per distinct user in each
	// batch. Listing spend by user or model without a key or team is rare
	// (the admin's /spend/logs): with dates it reads the start_time range,
	// without them it may read the whole table. Key, team and time keep
	// their indexes.
	`
DROP INDEX IF EXISTS spend_logs_user_id_start_time;
DROP INDEX IF EXISTS spend_logs_model_start_time;
`,
	// 3: the policy revision that decided each request, and what a cache
	// hit saved.
	`
ALTER TABLE spend_logs ADD COLUMN policy_version TEXT NOT NULL DEFAULT '';
ALTER TABLE spend_logs ADD COLUMN saved_cost BIGINT NOT NULL DEFAULT 0;
`,
}
