//! Tests of loading settings from every source and of their precedence.

use std::io::Write;
use std::time::Duration;

use super::*;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn args_with_config(f: &tempfile::NamedTempFile) -> WorkerArgs {
    WorkerArgs {
        config: Some(f.path().to_owned()),
        ..WorkerArgs::default()
    }
}

fn load(args: &WorkerArgs, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    Settings::load_with_host(args, vars(env), "box.example.com")
}

#[test]
fn defaults_are_celerys() {
    let s = load(&WorkerArgs::default(), &[]).unwrap();
    assert_eq!(s.broker_url.expose(), "redis://localhost:6379/0");
    assert_eq!(s.result_backend, None);
    assert!(s.broker_transport_options.is_empty());
    assert_eq!(s.result_expires, Some(Duration::from_secs(86_400)));
    assert!(!s.result_extended);
    assert!(!s.task_acks_late);
    assert!(!s.task_reject_on_worker_lost);
    assert!(s.task_acks_on_failure_or_timeout);
    assert!(!s.task_track_started);
    assert!(!s.task_ignore_result);
    assert!(!s.task_store_errors_even_if_ignored);
    assert_eq!(s.task_default_queue, "celery");
    assert_eq!(s.task_default_retry_delay, Duration::from_secs(180));
    assert_eq!((s.task_time_limit, s.task_soft_time_limit), (None, None));
    assert_eq!(s.task_default_rate_limit, None);
    assert_eq!(s.accept_content, vec!["json"]);
    assert_eq!(s.effective_result_accept_content(), ["json"]);
    assert_eq!(s.timezone, "UTC");
    assert_eq!(
        s.worker_concurrency,
        std::thread::available_parallelism().unwrap().get()
    );
    assert_eq!(s.worker_prefetch_multiplier, 4);
    assert!(!s.worker_send_task_events);
    assert_eq!(s.worker_soft_shutdown_timeout, Duration::ZERO);
    assert_eq!(s.shutdown_grace(), None);
    assert_eq!(s.worker_hostname, "celeriac@box.example.com");
    assert_eq!(s.queues, vec!["celery"]);
    assert_eq!(s.loglevel, LogLevel::Info);
    assert_eq!(s.dead_letter_policy, DeadLetterPolicy::DeadLetter);
    assert_eq!(s.dead_letter_key, "celeriac.dead_letter");
    assert_eq!(s.max_message_bytes, 16 * 1024 * 1024);
    assert_eq!(s.metrics_port, None);
    assert_eq!(s.log_format, LogFormat::Auto);
    assert_eq!(s.events_batch, 0);
    assert!(s.extra.is_empty());
}

const FULL_TOML: &str = r#"
broker_url = "redis://:hunter2@redis:6379/2"
result_backend = "redis://redis:6379/3"
task_acks_late = true
task_default_queue = "rust"
result_expires = 0
task_time_limit = 30.5
task_default_rate_limit = "100/m"
accept_content = ["json", "msgpack"]
worker_prefetch_multiplier = 1
broker_transport_options = { visibility_timeout = 3600, priority_steps = [0, 3, 6, 9], global_keyprefix = "app:" }

[celeriac]
dead_letter_policy = "requeue:python"
metrics_port = 9100
log_format = "json"

[sources]
orders = { queue = "orders" }

[[tasks]]
name = "app.add"
"#;

#[test]
fn toml_file_sets_values_and_keeps_other_tables() {
    let f = toml_file(FULL_TOML);
    let s = load(&args_with_config(&f), &[]).unwrap();
    assert_eq!(s.broker_url.expose(), "redis://:hunter2@redis:6379/2");
    assert_eq!(
        s.result_backend.as_ref().unwrap().expose(),
        "redis://redis:6379/3"
    );
    assert!(s.task_acks_late);
    assert_eq!(
        s.queues,
        vec!["rust"],
        "queues default to task_default_queue"
    );
    assert_eq!(s.result_expires, None);
    assert_eq!(s.task_time_limit, Some(Duration::from_millis(30_500)));
    let rate = s.task_default_rate_limit.as_ref().unwrap();
    assert!((rate.per_second - 100.0 / 60.0).abs() < 1e-9);
    assert_eq!(s.accept_content, vec!["json", "msgpack"]);
    assert_eq!(s.worker_prefetch_multiplier, 1);
    let opts = &s.broker_transport_options;
    assert_eq!(opts["visibility_timeout"], 3600);
    assert_eq!(opts["priority_steps"], serde_json::json!([0, 3, 6, 9]));
    assert_eq!(opts["global_keyprefix"], "app:");
    assert_eq!(
        s.dead_letter_policy,
        DeadLetterPolicy::Requeue("python".into())
    );
    assert_eq!(s.metrics_port, Some(9100));
    assert_eq!(s.log_format, LogFormat::Json);
    assert_eq!(
        s.extra["sources"]["orders"]["queue"].as_str(),
        Some("orders")
    );
    assert_eq!(s.extra["tasks"][0]["name"].as_str(), Some("app.add"));
}

#[test]
fn config_path_from_env_and_file_env() {
    let f = toml_file("task_track_started = true\n");
    let path = f.path().to_str().unwrap();
    let s = load(&WorkerArgs::default(), &[("CELERIAC_CONFIG", path)]).unwrap();
    assert!(s.task_track_started);
}

#[test]
fn env_overrides_toml() {
    let f = toml_file(FULL_TOML);
    let s = load(
        &args_with_config(&f),
        &[
            ("CELERY_TASK_ACKS_LATE", "no"),
            (
                "CELERY_BROKER_TRANSPORT_OPTIONS",
                r#"{"visibility_timeout": 30}"#,
            ),
            ("CELERY_ACCEPT_CONTENT", "json,yaml"),
            ("CELERY_WORKER_PREFETCH_MULTIPLIER", "2"),
            ("CELERIAC_METRICS_PORT", "9200"),
            ("CELERIAC_EVENTS_BATCH", "24"),
            ("CELERY_RESULT_BACKEND", ""),
            ("CELERY_UNRELATED_SETTING", "ignored"),
        ],
    )
    .unwrap();
    assert!(!s.task_acks_late);
    assert_eq!(s.broker_transport_options.len(), 1);
    assert_eq!(s.broker_transport_options["visibility_timeout"], 30);
    assert_eq!(s.accept_content, vec!["json", "yaml"]);
    assert_eq!(s.worker_prefetch_multiplier, 2);
    assert_eq!(s.metrics_port, Some(9200));
    assert_eq!(s.events_batch, 24);
    assert_eq!(
        s.result_backend, None,
        "an empty variable unsets an optional URL"
    );
    assert_eq!(s.task_default_queue, "rust", "untouched TOML values stay");
}

#[test]
fn cli_overrides_env() {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cmd {
        #[command(flatten)]
        args: WorkerArgs,
    }
    let cmd = Cmd::try_parse_from([
        "celeriac",
        "-Q",
        "a,b",
        "-Q",
        "c",
        "-c",
        "3",
        "--prefetch-multiplier",
        "1",
        "-l",
        "warning",
        "-n",
        "w1@%n",
        "-E",
        "--acks-late",
        "-b",
        "redis://cli:6379/5",
        "--result-backend",
        "redis://cli:6379/6",
        "--metrics-port",
        "9300",
        "--soft-shutdown-timeout",
        "12.5",
    ])
    .unwrap();
    let s = load(
        &cmd.args,
        &[
            ("CELERY_WORKER_QUEUES", "envq"),
            ("CELERY_WORKER_CONCURRENCY", "8"),
            ("CELERY_WORKER_LOGLEVEL", "DEBUG"),
            ("CELERY_WORKER_HOSTNAME", "env@host"),
            ("CELERY_TASK_ACKS_LATE", "false"),
            ("CELERY_BROKER_URL", "redis://env:6379/0"),
            ("CELERIAC_METRICS_PORT", "1"),
        ],
    )
    .unwrap();
    assert_eq!(s.queues, vec!["a", "b", "c"]);
    assert_eq!(s.worker_concurrency, 3);
    assert_eq!(s.worker_prefetch_multiplier, 1);
    assert_eq!(s.loglevel, LogLevel::Warning);
    assert_eq!(s.worker_hostname, "w1@box");
    assert!(s.worker_send_task_events);
    assert!(s.task_acks_late);
    assert_eq!(s.broker_url.expose(), "redis://cli:6379/5");
    assert_eq!(
        s.result_backend.as_ref().unwrap().expose(),
        "redis://cli:6379/6"
    );
    assert_eq!(s.metrics_port, Some(9300));
    assert_eq!(s.shutdown_grace(), Some(Duration::from_millis(12_500)));
}

#[test]
fn env_values_without_flags_stay() {
    let s = load(
        &WorkerArgs::default(),
        &[
            ("CELERY_WORKER_QUEUES", "x, y"),
            ("CELERY_WORKER_SEND_TASK_EVENTS", "1"),
        ],
    )
    .unwrap();
    assert_eq!(s.queues, vec!["x", "y"]);
    assert!(
        s.worker_send_task_events,
        "an absent -E must not reset the env value"
    );
}

#[test]
fn file_variables_hold_secrets() {
    let mut secret = tempfile::NamedTempFile::new().unwrap();
    secret
        .write_all(b"redis://:from-file@redis:6379/1\n")
        .unwrap();
    let path = secret.path().to_str().unwrap();
    let s = load(&WorkerArgs::default(), &[("CELERY_BROKER_URL_FILE", path)]).unwrap();
    assert_eq!(s.broker_url.expose(), "redis://:from-file@redis:6379/1");
    assert_eq!(s.broker_url.file(), Some(secret.path()));
}

#[test]
fn urls_remember_the_file_they_came_from_for_rotation() {
    let mut secret = tempfile::NamedTempFile::new().unwrap();
    secret.write_all(b"redis://:pw@redis:6379/1").unwrap();
    let path = secret.path().to_str().unwrap();
    let s = load(
        &WorkerArgs::default(),
        &[
            ("CELERY_RESULT_BACKEND_FILE", path),
            ("CELERY_BROKER_URL", "redis://:pw@redis:6379/0"),
        ],
    )
    .unwrap();
    assert_eq!(s.result_backend.unwrap().file(), Some(secret.path()));
    assert_eq!(s.broker_url.file(), None);
    // A flag given after the file wins, and has no file.
    let args = WorkerArgs {
        broker: Some("redis://:pw@other:6379/0".into()),
        ..WorkerArgs::default()
    };
    let s = load(&args, &[("CELERY_BROKER_URL_FILE", path)]).unwrap();
    assert_eq!(s.broker_url.expose(), "redis://:pw@other:6379/0");
    assert_eq!(s.broker_url.file(), None);
}

#[test]
fn both_variable_and_file_variable_is_an_error() {
    let err = load(
        &WorkerArgs::default(),
        &[
            ("CELERY_BROKER_URL", "redis://a/0"),
            ("CELERY_BROKER_URL_FILE", "/nonexistent"),
        ],
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("CELERY_BROKER_URL and CELERY_BROKER_URL_FILE"),
        "{msg}"
    );
}

#[test]
fn missing_file_variable_names_the_variable() {
    let err = load(
        &WorkerArgs::default(),
        &[("CELERY_RESULT_BACKEND_FILE", "/nonexistent/secret")],
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("CELERY_RESULT_BACKEND_FILE") && msg.contains("/nonexistent/secret"),
        "{msg}"
    );
}

#[test]
fn bad_values_name_the_variable_and_value() {
    let cases = [
        ("CELERY_TASK_ACKS_LATE", "perhaps"),
        ("CELERY_WORKER_PREFETCH_MULTIPLIER", "-1"),
        ("CELERY_WORKER_CONCURRENCY", "0"),
        ("CELERY_WORKER_LOGLEVEL", "LOUD"),
        ("CELERY_TASK_DEFAULT_RATE_LIMIT", "10/d"),
        ("CELERIAC_DEAD_LETTER_POLICY", "requeue:"),
        ("CELERIAC_METRICS_PORT", "70000"),
        ("CELERY_RESULT_EXPIRES", "soon"),
    ];
    for (var, value) in cases {
        let err = load(&WorkerArgs::default(), &[(var, value)]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(var) && msg.contains(&format!("{value:?}")),
            "{msg}"
        );
    }
}

#[test]
fn bad_cli_value_names_the_flag() {
    let args = WorkerArgs {
        concurrency: Some("many".into()),
        ..WorkerArgs::default()
    };
    let msg = load(&args, &[]).unwrap_err().to_string();
    assert!(
        msg.contains("--concurrency") && msg.contains("\"many\""),
        "{msg}"
    );
}

#[test]
fn bad_toml_value_names_the_key() {
    let f = toml_file("worker_concurrency = \"lots\"\n");
    let msg = load(&args_with_config(&f), &[]).unwrap_err().to_string();
    assert!(
        msg.contains("`worker_concurrency`") && msg.contains("\"lots\""),
        "{msg}"
    );
}

#[test]
fn unknown_toml_keys_are_errors_with_hints() {
    let f = toml_file("task_acks_lat = true\n");
    let msg = load(&args_with_config(&f), &[]).unwrap_err().to_string();
    assert!(
        msg.contains("`task_acks_lat`") && msg.contains("did you mean `task_acks_late`"),
        "{msg}"
    );

    let f = toml_file("metrics_port = 9100\n");
    let msg = load(&args_with_config(&f), &[]).unwrap_err().to_string();
    assert!(msg.contains("under [celeriac]"), "{msg}");

    let f = toml_file("[celeriac]\nmetric_port = 1\n");
    let msg = load(&args_with_config(&f), &[]).unwrap_err().to_string();
    assert!(msg.contains("`celeriac.metric_port`"), "{msg}");
}

#[test]
fn toml_syntax_error_does_not_echo_the_line() {
    let f = toml_file("task_acks_late = true\nbroker_url = \"redis://:hunter2@h/0\n");
    let msg = load(&args_with_config(&f), &[]).unwrap_err().to_string();
    assert!(msg.contains("line 2"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[test]
fn secrets_are_redacted_in_errors() {
    let err = load(
        &WorkerArgs::default(),
        &[("CELERY_BROKER_URL", "amqp://guest:hunter2@rabbit:5672//")],
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("CELERY_BROKER_URL") && msg.contains("amqp://guest:***@rabbit"),
        "{msg}"
    );
    assert!(
        !msg.contains("hunter2") && !format!("{err:?}").contains("hunter2"),
        "{msg}"
    );

    let err = load(
        &WorkerArgs::default(),
        &[(
            "CELERY_BROKER_TRANSPORT_OPTIONS",
            r#"{"password": "hunter2""#,
        )],
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("CELERY_BROKER_TRANSPORT_OPTIONS"), "{msg}");
    assert!(!msg.contains("hunter2"), "{msg}");
}

#[test]
fn secrets_are_redacted_in_debug() {
    let s = load(
        &WorkerArgs::default(),
        &[
            ("CELERY_BROKER_URL", "redis://user:hunter2@redis:6379/0"),
            ("CELERY_RESULT_BACKEND", "rediss://:sekrit@redis:6380/1"),
            (
                "CELERY_BROKER_TRANSPORT_OPTIONS",
                r#"{"sentinel_kwargs": {"password": "pw-in-options"}, "visibility_timeout": 60}"#,
            ),
        ],
    )
    .unwrap();
    let debug = format!("{s:?}");
    for secret in ["hunter2", "sekrit", "pw-in-options"] {
        assert!(!debug.contains(secret), "{debug}");
    }
    assert!(debug.contains("redis://user:***@redis:6379/0"), "{debug}");
    assert!(debug.contains("visibility_timeout"), "{debug}");
    assert_eq!(s.broker_url.to_string(), "redis://user:***@redis:6379/0");
}

#[test]
fn result_backend_disabled_and_schemes() {
    let s = load(
        &WorkerArgs::default(),
        &[("CELERY_RESULT_BACKEND", "disabled")],
    )
    .unwrap();
    assert_eq!(s.result_backend, None);
    let s = load(
        &WorkerArgs::default(),
        &[(
            "CELERY_BROKER_URL",
            "sentinel://s1:26379;sentinel://s2:26379",
        )],
    )
    .unwrap();
    assert!(s.broker_url.expose().starts_with("sentinel://s1"));
}

#[test]
fn json_list_env_and_every_flag_maps_to_a_setting() {
    let s = load(
        &WorkerArgs::default(),
        &[("CELERY_RESULT_ACCEPT_CONTENT", r#"["application/json"]"#)],
    )
    .unwrap();
    assert_eq!(s.effective_result_accept_content(), ["application/json"]);
    let every_flag = WorkerArgs {
        config: None,
        broker: Some("redis://h/0".into()),
        result_backend: Some("redis://h/1".into()),
        queues: vec!["q".into()],
        concurrency: Some("1".into()),
        async_concurrency: Some("1".into()),
        prefetch_multiplier: Some("1".into()),
        loglevel: Some("error".into()),
        hostname: Some("n".into()),
        task_events: true,
        acks_late: true,
        metrics_port: Some("1".into()),
        soft_shutdown_timeout: Some("1".into()),
        time_limit: Some("30".into()),
        soft_time_limit: Some("2.5".into()),
        max_tasks_per_child: Some("10".into()),
        max_memory_per_child: Some("0".into()),
        exclude_queues: vec![],
        without_mingle: true,
        without_heartbeat: true,
        without_gossip: true,
        optimization: Some("fair".into()),
        pidfile: None,
        logfile: None,
        app: Some("proj".into()),
        pool: Some("prefork".into()),
        autoscale: Some("10,3".into()),
    };
    let s = load(&every_flag, &[]).unwrap();
    assert_eq!(s.worker_hostname, "celeriac@n");
    assert_eq!(s.loglevel, LogLevel::Error);
    assert_eq!(s.task_time_limit, Some(Duration::from_secs(30)));
    assert_eq!(s.task_soft_time_limit, Some(Duration::from_millis(2500)));
    assert_eq!(s.worker_max_tasks_per_child, Some(10));
    assert_eq!(s.worker_max_memory_per_child, None, "0 means no limit");
    assert!(s.without_mingle && s.without_heartbeat);
    assert_eq!(every_flag.ignored_flags().len(), 3);
}

#[test]
fn exclude_queues_removes_from_the_consumed_queues() {
    let args = |q: &[&str], x: &[&str]| WorkerArgs {
        queues: q.iter().map(|s| s.to_string()).collect(),
        exclude_queues: x.iter().map(|s| s.to_string()).collect(),
        ..WorkerArgs::default()
    };
    let s = load(&args(&["a", "b", "c"], &["b"]), &[]).unwrap();
    assert_eq!(s.queues, ["a", "c"]);
    let s = load(&args(&[], &["nope"]), &[("CELERY_TASK_DEFAULT_QUEUE", "d")]).unwrap();
    assert_eq!(s.queues, ["d"], "the default queue when -Q is not given");
    let err = load(&args(&["a"], &["a"]), &[]).unwrap_err().to_string();
    assert!(err.contains("--exclude-queues"), "{err}");
}

#[test]
fn celery_worker_settings_for_task_processes_from_the_environment() {
    let s = load(
        &WorkerArgs::default(),
        &[
            ("CELERY_WORKER_MAX_TASKS_PER_CHILD", "5"),
            ("CELERY_WORKER_MAX_MEMORY_PER_CHILD", "120000"),
            ("CELERIAC_WITHOUT_MINGLE", "yes"),
        ],
    )
    .unwrap();
    assert_eq!(s.worker_max_tasks_per_child, Some(5));
    assert_eq!(s.worker_max_memory_per_child, Some(120_000));
    assert!(s.without_mingle);
    assert!(!s.without_heartbeat);
    let defaults = load(&WorkerArgs::default(), &[]).unwrap();
    assert_eq!(defaults.worker_max_tasks_per_child, None);
    assert_eq!(defaults.worker_max_memory_per_child, None);
}

#[test]
fn security_settings_from_the_environment() {
    let mut password = tempfile::NamedTempFile::new().unwrap();
    password.write_all(b"sekrit-key-pw\n").unwrap();
    let s = load(
        &WorkerArgs::default(),
        &[
            ("CELERY_TASK_SERIALIZER", "auth"),
            ("CELERY_RESULT_SERIALIZER", "json"),
            ("CELERY_ACCEPT_CONTENT", "auth"),
            ("CELERY_SECURITY_KEY", "/etc/celery/worker.key"),
            (
                "CELERY_SECURITY_KEY_PASSWORD_FILE",
                password.path().to_str().unwrap(),
            ),
            ("CELERY_SECURITY_CERTIFICATE", "/etc/celery/worker.pem"),
            ("CELERY_SECURITY_CERT_STORE", "/etc/celery/certs/*.pem"),
            ("CELERY_SECURITY_DIGEST", "SHA512"),
        ],
    )
    .unwrap();
    assert_eq!(s.task_serializer, crate::config::SerializerName::Auth);
    assert_eq!(s.result_serializer, crate::config::SerializerName::Json);
    assert_eq!(
        s.security_key_password.as_ref().map(|p| p.expose()),
        Some("sekrit-key-pw")
    );
    assert_eq!(
        s.security_digest,
        celeriac_broker_bridge::signing::Digest::Sha512
    );
    assert!(!format!("{s:?}").contains("sekrit"));

    let err = load(
        &WorkerArgs::default(),
        &[("CELERY_TASK_SERIALIZER", "msgpack")],
    )
    .unwrap_err();
    assert!(err.to_string().contains("CELERY_TASK_SERIALIZER"), "{err}");
    let err = load(&WorkerArgs::default(), &[("CELERY_SECURITY_DIGEST", "md5")]).unwrap_err();
    assert!(err.to_string().contains("sha256"), "{err}");
}

#[test]
fn debug_masks_passwords_pasted_into_plain_settings() {
    let s = load(
        &WorkerArgs::default(),
        &[
            ("CELERY_TIMEZONE", "redis:pw-in-tz@h"),
            ("CELERY_TASK_DEFAULT_QUEUE", "redis://u:pw-in-queue@h/0"),
            ("CELERY_WORKER_HOSTNAME", "celeriac@box"),
        ],
    )
    .unwrap();
    let debug = format!("{s:?}");
    assert!(
        !debug.contains("pw-in-tz") && !debug.contains("pw-in-queue"),
        "{debug}"
    );
    assert!(debug.contains("celeriac@box"), "{debug}");
}

#[test]
fn urls_with_spaces_are_refused_without_showing_their_password() {
    // Found by fuzzing: redaction ends a URL at a space, so the password after it showed.
    let err = load(
        &WorkerArgs::default(),
        &[(
            "CELERY_RESULT_BACKEND",
            "rediss://t match (invalid u:pw-after-space@h:6380/1",
        )],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("CELERY_RESULT_BACKEND"), "{err}");
    assert!(!err.contains("pw-after-space"), "{err}");
    let err = load(
        &WorkerArgs::default(),
        &[("CELERY_BROKER_URL", "rediss://u:x`\0/:pw-after-tick@h/0")],
    )
    .unwrap_err()
    .to_string();
    assert!(!err.contains("pw-after-tick"), "{err}");
}

#[test]
fn async_tasks_get_their_own_slots_unless_only_c_is_given() {
    use crate::config::{Slots, DEFAULT_ASYNC_CONCURRENCY};
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let s = load(&WorkerArgs::default(), &[]).unwrap();
    assert_eq!(
        s.slots(),
        Slots {
            async_tasks: DEFAULT_ASYNC_CONCURRENCY,
            thread_tasks: cpus,
            shared: false
        }
    );
    let only_c = WorkerArgs {
        concurrency: Some("3".into()),
        ..WorkerArgs::default()
    };
    assert_eq!(
        load(&only_c, &[]).unwrap().slots(),
        Slots {
            async_tasks: 3,
            thread_tasks: 3,
            shared: true
        }
    );
    assert_eq!(
        load(
            &WorkerArgs::default(),
            &[("CELERY_WORKER_CONCURRENCY", "5")]
        )
        .unwrap()
        .slots(),
        Slots {
            async_tasks: 5,
            thread_tasks: 5,
            shared: true
        }
    );
    let both = WorkerArgs {
        concurrency: Some("3".into()),
        async_concurrency: Some("100".into()),
        ..WorkerArgs::default()
    };
    assert_eq!(
        load(&both, &[]).unwrap().slots(),
        Slots {
            async_tasks: 100,
            thread_tasks: 3,
            shared: false
        }
    );
    let f = toml_file("[celeriac]\nasync_concurrency = 64\n");
    assert_eq!(
        load(&args_with_config(&f), &[])
            .unwrap()
            .slots()
            .async_tasks,
        64
    );
    assert_eq!(
        load(
            &WorkerArgs::default(),
            &[("CELERIAC_ASYNC_CONCURRENCY", "7")]
        )
        .unwrap()
        .slots()
        .async_tasks,
        7
    );
    assert!(load(
        &WorkerArgs::default(),
        &[("CELERIAC_ASYNC_CONCURRENCY", "0")]
    )
    .is_err());
}

#[test]
fn the_broker_may_be_sqs_the_result_backend_may_not() {
    assert!(SecretUrl::parse_broker("sqs://k:s@localhost:4566").is_ok());
    assert!(SecretUrl::parse_broker("sqs://").is_ok());
    assert!(SecretUrl::parse_broker("redis://localhost:6379/0").is_ok());
    assert!(SecretUrl::parse_broker("sqs://a:b@h:1;sqs://c:d@h:2").is_err());
    assert!(SecretUrl::parse_broker("sqs://k:s@h:port").is_err());
    assert!(SecretUrl::parse("sqs://k:s@localhost:4566").is_err());
}

#[test]
fn env_names_are_the_toml_keys_with_their_prefix() {
    let mut keys = std::collections::HashSet::new();
    for field in super::settings::FIELDS {
        assert!(keys.insert(field.key), "{} declared twice", field.key);
        let prefix = if field.celeriac {
            "CELERIAC_"
        } else {
            "CELERY_"
        };
        // Celery's own CLI reads these two as CELERY_WORKER_<NAME>.
        let name = match field.key {
            "queues" | "loglevel" => format!("worker_{}", field.key),
            key => key.to_owned(),
        };
        assert_eq!(field.env, format!("{prefix}{}", name.to_ascii_uppercase()));
    }
}

#[test]
fn declared_flags_are_valid_clap_arguments() {
    use clap::Args;
    WorkerArgs::augment_args(clap::Command::new("worker")).debug_assert();
}

/// The marker line above the README's settings table; the table runs to [`TABLE_END`].
const TABLE_START: &str = "<!-- settings table: generated";
const TABLE_END: &str = "<!-- end of settings table -->";

#[test]
fn readme_settings_table_is_generated_from_the_declarations() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let marker = readme
        .find(TABLE_START)
        .expect("README's table start marker");
    let start = marker + readme[marker..].find('\n').unwrap() + 1;
    let end = readme.find(TABLE_END).expect("README's table end marker");
    let table = super::declare::docs_table();
    if readme[start..end] == table {
        return;
    }
    if std::env::var_os("CELERIAC_UPDATE_README").is_some() {
        let updated = format!("{}{table}{}", &readme[..start], &readme[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    panic!(
        "worker/README.md's settings table differs from the declarations in \
         worker/src/config/settings.rs; regenerate it with `CELERIAC_UPDATE_README=1 cargo test \
         -p celeriac-worker --lib config::tests::readme_settings_table`"
    );
}

#[test]
fn rate_limit_scope_parses() {
    assert_eq!("Fleet".parse::<RateLimitScope>(), Ok(RateLimitScope::Fleet));
    assert_eq!(
        "worker".parse::<RateLimitScope>(),
        Ok(RateLimitScope::Worker)
    );
    assert!("all".parse::<RateLimitScope>().is_err());
}
