use super::*;
use fms_actors::daemon::{Role, Setting};

const GOOD: &str = r#"
agent = "nas-01"
[database]
url = "postgres://fms:hunter2@db:5432/fms"
[storage]
kind = "s3"
bucket = "nas"
endpoint = "http://garage:3900"
region = "garage"
access_key_id = "GK123"
secret_access_key = "s3cr3t"
[[roots]]
label = "documents"
path = "/data/documents"
[ignore]
patterns = ["*.bak"]
[watch]
poll_interval = "2s"
[upload]
concurrency = 4
"#;

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

fn keys(errors: ConfigErrors) -> Vec<String> {
    errors.0.into_iter().map(|problem| problem.key).collect()
}

#[test]
fn a_good_file_loads_with_defaults() {
    let config = load_from_str(GOOD, no_env()).unwrap();
    assert_eq!(config.agent, "nas-01");
    assert_eq!(
        config.roots,
        vec![RootConfig {
            label: "documents".into(),
            path: "/data/documents".into()
        }]
    );
    assert_eq!(config.upload.concurrency, 4);
    assert_eq!(config.watch.debounce, Duration::from_secs(3));
    assert_eq!(config.scan.schedule.expression(), "0 3 * * *");
    assert!(matches!(
        config.storage,
        StorageConfig::S3 {
            path_style: true,
            multipart_threshold: 67108864,
            ..
        }
    ));
}

#[test]
fn every_problem_is_reported_at_once_with_its_key_path() {
    let text = r#"
colour = "blue"
[database]
[storage]
kind = "s3"
part_size = "1MiB"
[[roots]]
label = "a"
path = "relative/path"
[[roots]]
label = "a"
path = "/x"
extra = 1
[watch]
mode = "sometimes"
debounce = "soon"
[upload]
concurrency = 0
[log]
level = "loud"
[ignore]
patterns = ["[oops"]
"#;
    let mut found = keys(load_from_str(text, no_env()).unwrap_err());
    found.sort();
    let mut expected = vec![
        "colour",
        "database.url",
        "storage.bucket",
        "storage.access_key_id",
        "storage.secret_access_key",
        "storage.part_size",
        "roots[0].path",
        "roots[1].label",
        "roots[1].extra",
        "watch.mode",
        "watch.debounce",
        "upload.concurrency",
        "log.level",
        "ignore.patterns[0]",
    ];
    expected.sort();
    assert_eq!(found, expected);
}

#[test]
fn environment_overrides_the_file() {
    let vars = vec![
        ("FMS_UPLOAD__CONCURRENCY".to_string(), "16".to_string()),
        ("FMS_STORAGE__BUCKET".to_string(), "other".to_string()),
        ("FMS_WATCH__MODE".to_string(), "native".to_string()),
        ("UNRELATED".to_string(), "x".to_string()),
    ];
    let config = load_from_str(GOOD, vars).unwrap();
    assert_eq!(config.upload.concurrency, 16);
    assert_eq!(config.watch.mode, WatchMode::Native);
    assert!(matches!(config.storage, StorageConfig::S3 { ref bucket, .. } if bucket == "other"));
}

#[test]
fn bad_environment_value_names_its_key() {
    let vars = vec![("FMS_UPLOAD__CONCURRENCY".to_string(), "lots".to_string())];
    assert_eq!(keys(load_from_str(GOOD, vars).unwrap_err()), vec!["upload.concurrency"]);
}

#[test]
fn secrets_come_from_files_and_are_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, "from-file-secret\n").unwrap();
    let text = GOOD.replace(
        "secret_access_key = \"s3cr3t\"",
        &format!("secret_access_key_file = \"{}\"", secret_file.display()),
    );
    let config = load_from_str(&text, no_env()).unwrap();
    let StorageConfig::S3 { secret_access_key, .. } = &config.storage else {
        panic!("s3 expected")
    };
    assert_eq!(secret_access_key, "from-file-secret");
    let shown = serde_json::to_string(&config).unwrap();
    for secret in ["from-file-secret", "hunter2", "GK123"] {
        assert!(!shown.contains(secret), "{secret} leaked into {shown}");
    }
    assert!(shown.contains("postgres://fms:***@db:5432/fms"));
}

#[test]
fn missing_secret_file_is_a_problem_of_that_key() {
    let text = GOOD.replace(
        "secret_access_key = \"s3cr3t\"",
        "secret_access_key_file = \"/nonexistent/x\"",
    );
    assert_eq!(
        keys(load_from_str(&text, no_env()).unwrap_err()),
        vec!["storage.secret_access_key_file"]
    );
}

#[test]
fn redacted_url_table() {
    assert_eq!(redacted_url("postgres://u:p@h/db"), "postgres://u:***@h/db");
    assert_eq!(redacted_url("postgres://u@h/db"), "postgres://u@h/db");
    assert_eq!(redacted_url("host=/tmp dbname=x"), "host=/tmp dbname=x");
    assert_eq!(
        redacted_url("host=db password=s3cret-pw dbname=x"),
        "host=db password=*** dbname=x"
    );
    assert_eq!(
        redacted_url("host=db password = 'it\\'s a \\\\ secret' user=u"),
        "host=db password=*** user=u"
    );
    assert_eq!(redacted_url("host=db user=mypassword"), "host=db user=mypassword");
    assert_eq!(
        redacted_url("postgres://u@h/db?password=s3cret%2Fpw&sslmode=require"),
        "postgres://u@h/db?password=***&sslmode=require"
    );
}

#[test]
fn the_ca_file_is_checked_and_its_change_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let with_ca = |file: &std::path::Path| {
        GOOD.replace(
            "url = \"postgres://fms:hunter2@db:5432/fms\"",
            &format!(
                "url = \"postgres://fms:hunter2@db:5432/fms?sslmode=require\"\nca_file = \"{}\"",
                file.display()
            ),
        )
    };
    let errors = load_from_str(&with_ca(&missing), no_env()).unwrap_err();
    assert!(errors.to_string().contains("missing.pem"), "{errors}");
    assert_eq!(keys(errors), vec!["database.ca_file"]);
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    assert_eq!(
        keys(load_from_str(&with_ca(&not_pem), no_env()).unwrap_err()),
        vec!["database.ca_file"]
    );
    let disabled = GOOD.replace(
        "url = \"postgres://fms:hunter2@db:5432/fms\"",
        "url = \"postgres://fms:hunter2@db:5432/fms?sslmode=disable&sslrootcert=/x.pem\"",
    );
    assert_eq!(
        keys(load_from_str(&disabled, no_env()).unwrap_err()),
        vec!["database.url"]
    );
    let verify = GOOD.replace(
        "url = \"postgres://fms:hunter2@db:5432/fms\"",
        "url = \"postgres://fms:hunter2@db:5432/fms?sslmode=verify-full\"",
    );
    let old = load_from_str(GOOD, no_env()).unwrap();
    let new = load_from_str(&verify, no_env()).unwrap();
    assert_eq!(changed(&old, &new), vec![Setting::DatabaseUrl]);
    let store_ca = GOOD.replace(
        "region = \"garage\"",
        &format!("region = \"garage\"\nca_file = \"{}\"", missing.display()),
    );
    assert_eq!(
        keys(load_from_str(&store_ca, no_env()).unwrap_err()),
        vec!["storage.ca_file"]
    );
}

/// The daemon's settings that differ between two configurations, as a reload sees them.
fn changed(old: &Config, new: &Config) -> Vec<Setting> {
    let settings = |config: &Config| crate::commands::run::daemon_settings(config, Role::All);
    fms_actors::daemon::changed_settings(&settings(old), &settings(new))
}

#[test]
fn a_reload_names_each_changed_key_from_the_typed_settings() {
    let old = load_from_str(GOOD, no_env()).unwrap();
    assert_eq!(changed(&old, &old.clone()), vec![]);
    // The time zone moves every schedule and the window; it is named once, as itself.
    let tokyo = load_from_str(&format!("{GOOD}[scan]\ntimezone = \"Asia/Tokyo\"\n"), no_env()).unwrap();
    assert_eq!(changed(&old, &tokyo), vec![Setting::ScanTimezone]);
    let edited = GOOD
        .replace("patterns = [\"*.bak\"]", "patterns = [\"*.bak\", \"*.tmp\"]")
        .replace("secret_access_key = \"s3cr3t\"", "secret_access_key = \"rotated\"")
        .replace("concurrency = 4", "concurrency = 4\nwindow = \"22:00-06:00\"");
    let edited = load_from_str(&format!("{edited}[http]\nlisten = \"127.0.0.1:9999\"\n"), no_env()).unwrap();
    assert_eq!(
        changed(&old, &edited),
        vec![
            Setting::Storage,
            Setting::IgnorePatterns,
            Setting::UploadWindow,
            Setting::HttpListen
        ]
    );
}

#[test]
fn every_default_is_what_the_example_states() {
    let example = load_from_str(include_str!("../../config/filemetasync.example.toml"), no_env()).unwrap();
    // What the example sets because there is no default (or the machine decides it), and
    // nothing else: every other key's default must be what the example says it is.
    let minimal = r#"
agent = "nas-01"
[database]
url = "postgres://fms:change-me@db:5432/fms"
[storage]
kind = "s3"
bucket = "nas"
endpoint = "http://garage:3900"
region = "garage"
access_key_id = "GK..."
secret_access_key = "..."
[[roots]]
label = "documents"
path = "/data/documents"
[ignore]
patterns = ["*.bak"]
[scan]
timezone = "Europe/Berlin"
[hash]
workers = 2
[log]
format = "json"
"#;
    let defaults = load_from_str(minimal, no_env()).unwrap();
    assert_eq!(defaults, example);
}

#[test]
fn the_documented_example_is_valid() {
    let text = include_str!("../../config/filemetasync.example.toml");
    let config = load_from_str(text, no_env()).unwrap();
    assert_eq!(config.roots.len(), 1);
    assert_eq!(config.scan.timezone, fms_actors::Tz::Europe__Berlin);
}

#[test]
fn retention_keeps_everything_by_default() {
    let minimal = load_from_str(
        "[database]\nurl = \"postgres://x@h/db\"\n[storage]\nkind = \"local\"\npath = \"/s\"\n\
         [[roots]]\nlabel = \"a\"\npath = \"/a\"\n",
        no_env(),
    )
    .unwrap();
    assert!(minimal.retention.policy().keeps_everything());
    assert_eq!(minimal.retention.grace, Duration::from_secs(24 * 3600));
}

#[test]
fn a_stall_timeout_within_a_call_timeout_is_refused_naming_both() {
    let base = "[database]\nurl = \"postgres://x@h/db\"\nstatement_timeout = \"2m\"\n[storage]\nkind = \"local\"\n\
                path = \"/s\"\n[[roots]]\nlabel = \"a\"\npath = \"/a\"\n";
    let errors = load_from_str(&format!("{base}[daemon]\nstall_timeout = \"90s\"\n"), no_env()).unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].key, "daemon.stall_timeout");
    assert!(
        errors.0[0].message.contains("database.statement_timeout (2m)"),
        "{errors}"
    );
    let config = load_from_str(&format!("{base}[daemon]\nstall_timeout = \"3m\"\n"), no_env()).unwrap();
    assert_eq!(config.daemon.stall_timeout, Duration::from_secs(180));
}

#[test]
fn retention_reads_forever_and_durations_and_refuses_a_grace_within_the_lease() {
    let base = "[database]\nurl = \"postgres://x@h/db\"\n[storage]\nkind = \"local\"\npath = \"/s\"\n\
                [[roots]]\nlabel = \"a\"\npath = \"/a\"\n";
    let config = load_from_str(
        &format!("{base}[retention]\ndeleted_for = \"90days\"\nreplaced_for = \"FOREVER\"\nkeep_versions = 3\n"),
        no_env(),
    )
    .unwrap();
    assert_eq!(config.retention.deleted_for, Some(Duration::from_secs(90 * 86400)));
    assert_eq!(config.retention.replaced_for, None);
    assert_eq!(config.retention.keep_versions, 3);
    let errors = load_from_str(
        &format!("{base}[retention]\ndeleted_for = \"soon\"\ngrace = \"10m\"\nschedule = \"every day\"\n"),
        no_env(),
    )
    .unwrap_err();
    let keys: Vec<&str> = errors.0.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        vec!["retention.deleted_for", "retention.schedule", "retention.grace"]
    );
    assert!(
        errors.0[2].message.contains("not longer than upload.lease (15m)"),
        "{}",
        errors.0[2].message
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Any text at all: a configuration or a list of problems, never a panic.
        #[test]
        fn any_text_loads_or_names_its_problems(text in ".{0,400}") {
            if let Err(errors) = load_from_str(&text, no_env()) {
                prop_assert!(!errors.0.is_empty());
            }
        }

        /// A good file with one key set to an arbitrary TOML value: it loads, or the problem
        /// names exactly that key.
        #[test]
        fn a_bad_value_is_reported_under_its_key(
            key in prop::sample::select(vec![
                ("upload", "concurrency"), ("upload", "max_attempts"), ("upload", "bandwidth_limit"),
                ("upload", "window"), ("scan", "schedule"), ("scan", "timezone"), ("hash", "workers"), ("hash", "metadata"),
                ("watch", "poll_interval"), ("watch", "mode"), ("log", "level"), ("http", "listen"),
                ("retention", "deleted_for"), ("retention", "grace"), ("retention", "schedule"),
                ("retention", "keep_versions"), ("daemon", "stall_timeout"),
            ]),
            value in prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                "[a-z0-9 :*/-]{0,12}".prop_map(|s| format!("{s:?}")),
                any::<bool>().prop_map(|b| b.to_string()),
                Just("[1, 2]".to_owned()),
            ],
        ) {
            let (section, name) = key;
            let text = format!("{GOOD}\n[{section}]\n{name} = {value}\n")
                .replace("[upload]\nconcurrency = 4\n", "")
                .replace("[watch]\npoll_interval = \"2s\"\n", "");
            match load_from_str(&text, no_env()) {
                Ok(_) => {}
                Err(errors) => {
                    let keys = keys(errors);
                    prop_assert_eq!(keys, vec![format!("{section}.{name}")]);
                }
            }
        }
    }
}

#[test]
fn supabase_s_transaction_pooler_schema_names_and_integrity_modes_are_checked() {
    let pooler = GOOD.replace(
        "postgres://fms:hunter2@db:5432/fms",
        "postgres://postgres.abcdefgh:pw@aws-0-eu-central-1.pooler.supabase.com:6543/postgres",
    );
    let errors = load_from_str(&pooler, no_env()).unwrap_err();
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].key, "database.url");
    assert!(errors.0[0].message.contains("transaction pooler (port 6543)"));
    assert!(errors.0[0].message.contains("session pooler"));
    // The session pooler (port 5432 on the same host) is fine.
    let session = pooler.replace(":6543/", ":5432/");
    assert!(load_from_str(&session, no_env()).is_ok());

    let schema = GOOD.replace("[database]\n", "[database]\nschema = \"filemetasync\"\n");
    let config = load_from_str(&schema, no_env()).unwrap();
    assert_eq!(config.database.schema.as_deref(), Some("filemetasync"));
    assert_eq!(config.database.target().schema.as_deref(), Some("filemetasync"));
    let bad_schema = GOOD.replace("[database]\n", "[database]\nschema = \"Robert'); DROP\"\n");
    assert_eq!(
        keys(load_from_str(&bad_schema, no_env()).unwrap_err()),
        vec!["database.schema"]
    );

    let default = load_from_str(GOOD, no_env()).unwrap();
    assert!(matches!(
        default.storage,
        StorageConfig::S3 {
            integrity: fms_actors::store::IntegrityMode::Auto,
            ..
        }
    ));
    let read_back = GOOD.replace("[storage]\n", "[storage]\nintegrity = \"read-back\"\n");
    assert!(matches!(
        load_from_str(&read_back, no_env()).unwrap().storage,
        StorageConfig::S3 {
            integrity: fms_actors::store::IntegrityMode::ReadBack,
            ..
        }
    ));
    let wrong = GOOD.replace("[storage]\n", "[storage]\nintegrity = \"none\"\n");
    let errors = load_from_str(&wrong, no_env()).unwrap_err();
    assert_eq!(errors.0[0].key, "storage.integrity");
    assert!(errors.0[0]
        .message
        .contains("\"auto\", \"server\", \"checksum\" or \"read-back\""));
}
