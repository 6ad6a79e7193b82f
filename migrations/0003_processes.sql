-- Running FileMetadataSync processes and the state of their actors, so that `status` (run
-- anywhere) can show every daemon sharing the catalog. Each daemon upserts its row every few
-- seconds; a row whose heartbeat is old belongs to a process that is gone or hung.
CREATE TABLE agent_processes (
    worker        text PRIMARY KEY,              -- agent:pid:random, as in upload leases
    agent         text NOT NULL,
    role          text NOT NULL,                 -- all | index | upload
    pid           integer NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    stopped_at    timestamptz,                   -- set on a graceful shutdown
    actors        jsonb NOT NULL DEFAULT '[]'    -- [{actor, state, restarts, reason}]
);

CREATE INDEX agent_processes_heartbeat ON agent_processes (heartbeat_at DESC);
