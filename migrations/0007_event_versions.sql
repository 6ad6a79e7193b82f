-- Each event that gives a file a version records that version whole: the encoding of
-- new_path, and the size and mtime (nanoseconds) of the file as registered, so that
-- `restore --at` brings a file back with the mtime it had then. Events written before this
-- migration have NULLs here; restore falls back to the file's row and the content's size.
ALTER TABLE file_events
    ADD COLUMN path_encoding text CHECK (path_encoding IN ('utf8', 'percent')),
    ADD COLUMN size          bigint,
    ADD COLUMN mtime_ns      bigint;

-- Restore reads a root's events up to a moment, file by file.
CREATE INDEX file_events_root_file ON file_events (root, file_id, id);
-- `history PATH`: every path a row ever had is the new_path of one of its events.
CREATE INDEX file_events_root_new_path ON file_events (root, new_path);
