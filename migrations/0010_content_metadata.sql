-- Content metadata: what a content is (its MIME type from the bytes, a photo's capture time,
-- camera and position, a document's pages, title and authors, an IFC model's schema and the
-- program that wrote it, a DWG's version, a message's subject and sender). A property of the
-- bytes, so one row per content, written in the registration that introduces the content.
--
--   captured_at       a photo's EXIF DateTimeOriginal in the camera's local time (EXIF keeps
--                     no zone; details.capture_offset has the offset where the camera wrote one)
--   page_count        pages of a PDF or a Word document, sheets of a workbook, slides
--   application       the program that wrote the file (EXIF Software, PDF Creator/Producer,
--                     Office Application, IFC originating system)
--   format_version    PDF 1.7, IFC4, AC1032 (details.release: AutoCAD 2018), Office AppVersion
--   details           everything else the extractor found
--   unreadable        why the format's extractor could not read it (NULL when it could);
--                     the MIME type still holds
--   extractor_version which extractors wrote the row (`metadata backfill --reread` replaces
--                     rows of older ones)
CREATE TABLE content_metadata (
    sha256            text PRIMARY KEY REFERENCES file_contents (sha256),
    mime_type         text,
    captured_at       timestamp,
    camera_make       text,
    camera_model      text,
    gps_latitude      double precision CHECK (gps_latitude BETWEEN -90 AND 90),
    gps_longitude     double precision CHECK (gps_longitude BETWEEN -180 AND 180),
    width             integer,
    height            integer,
    orientation       smallint,
    page_count        integer,
    title             text,
    author            text,
    last_modified_by  text,
    created_at        timestamptz,
    modified_at       timestamptz,
    application       text,
    format_version    text,
    details           jsonb NOT NULL DEFAULT '{}',
    unreadable        text,
    extractor_version integer NOT NULL,
    extracted_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX content_metadata_captured_at ON content_metadata (captured_at) WHERE captured_at IS NOT NULL;
CREATE INDEX content_metadata_mime_type ON content_metadata (mime_type);
CREATE INDEX content_metadata_created_at ON content_metadata (created_at) WHERE created_at IS NOT NULL;

-- Files with their links (linked_files, 0002) and their content's metadata: the view for
-- downstream queries. Live files only (a deleted file's row and metadata stay in the tables).
CREATE VIEW file_details AS
SELECT l.*,
       m.mime_type, m.captured_at, m.camera_make, m.camera_model, m.gps_latitude, m.gps_longitude,
       m.width, m.height, m.orientation, m.page_count, m.title, m.author, m.last_modified_by,
       m.created_at AS content_created_at, m.modified_at AS content_modified_at,
       m.application, m.format_version, m.details, m.unreadable AS metadata_unreadable
  FROM linked_files l
  LEFT JOIN content_metadata m ON m.sha256 = l.sha256;

-- As before (0006), and the runtime role writes metadata and reads the view.
CREATE OR REPLACE FUNCTION fms_grant_runtime(runtime_role text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', current_schema(), runtime_role);
    EXECUTE format('GRANT SELECT ON schema_migrations, files, file_contents, upload_queue, file_events,
                    scans, agent_processes, projects, buildings, cost_groups, link_rules, file_links,
                    store_checks, catalog_counts, content_metadata, file_details, linked_files
                    TO %I', runtime_role);
    EXECUTE format('GRANT INSERT, UPDATE ON files, file_contents, upload_queue, scans, agent_processes,
                    store_checks, content_metadata TO %I', runtime_role);
    EXECUTE format('GRANT INSERT, DELETE ON catalog_counts TO %I', runtime_role);
    EXECUTE format('GRANT DELETE ON upload_queue TO %I', runtime_role);
    EXECUTE format('GRANT INSERT ON file_events TO %I', runtime_role);
    EXECUTE format('GRANT INSERT, UPDATE, DELETE ON file_links TO %I', runtime_role);
    EXECUTE format('GRANT INSERT ON projects, buildings TO %I', runtime_role);
    EXECUTE format('GRANT USAGE ON ALL SEQUENCES IN SCHEMA %I TO %I', current_schema(), runtime_role);
END
$$;
