//! The table of settings: each one's TOML key, environment variable and how to apply a value.

use super::settings::{Password, SecretUrl, Settings};
use super::value::{Raw, Secrecy};

/// One setting celeriac honours.
pub(crate) struct Field {
    /// The TOML key: Celery's setting name, or the key under `[celeriac]` for celeriac-only ones.
    pub key: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// Whether it lives under `[celeriac]` in TOML.
    pub celeriac: bool,
    /// How much of a bad value errors may show.
    pub secrecy: Secrecy,
    /// Parses the value and stores it.
    pub apply: fn(&mut Settings, Raw) -> Result<(), String>,
}

const fn celery(
    key: &'static str,
    env: &'static str,
    secrecy: Secrecy,
    apply: fn(&mut Settings, Raw) -> Result<(), String>,
) -> Field {
    Field {
        key,
        env,
        celeriac: false,
        secrecy,
        apply,
    }
}

const fn celeriac(
    key: &'static str,
    env: &'static str,
    apply: fn(&mut Settings, Raw) -> Result<(), String>,
) -> Field {
    Field {
        key,
        env,
        celeriac: true,
        secrecy: Secrecy::Plain,
        apply,
    }
}

use Secrecy::{Hidden, Plain, Url};

/// Every setting, in the order of the README table.
pub(crate) static FIELDS: &[Field] = &[
    celery("broker_url", "CELERY_BROKER_URL", Url, |s, r| {
        s.broker_url = SecretUrl::parse_broker(&r.non_empty_string()?)?;
        Ok(())
    }),
    celery("result_backend", "CELERY_RESULT_BACKEND", Url, |s, r| {
        s.result_backend = match r.optional_string()? {
            None => None,
            Some(v) if v.eq_ignore_ascii_case("disabled") => None,
            Some(v) => Some(SecretUrl::parse(&v)?),
        };
        Ok(())
    }),
    celery(
        "broker_transport_options",
        "CELERY_BROKER_TRANSPORT_OPTIONS",
        Hidden,
        |s, r| {
            s.broker_transport_options = r.json_object()?;
            Ok(())
        },
    ),
    celery(
        "result_backend_transport_options",
        "CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS",
        Hidden,
        |s, r| {
            s.result_backend_transport_options = r.json_object()?;
            Ok(())
        },
    ),
    celery("result_expires", "CELERY_RESULT_EXPIRES", Plain, |s, r| {
        s.result_expires = r.optional_seconds()?;
        Ok(())
    }),
    celery(
        "result_extended",
        "CELERY_RESULT_EXTENDED",
        Plain,
        |s, r| {
            s.result_extended = r.bool()?;
            Ok(())
        },
    ),
    celery("task_acks_late", "CELERY_TASK_ACKS_LATE", Plain, |s, r| {
        s.task_acks_late = r.bool()?;
        Ok(())
    }),
    celery(
        "task_reject_on_worker_lost",
        "CELERY_TASK_REJECT_ON_WORKER_LOST",
        Plain,
        |s, r| {
            s.task_reject_on_worker_lost = r.bool()?;
            Ok(())
        },
    ),
    celery(
        "task_acks_on_failure_or_timeout",
        "CELERY_TASK_ACKS_ON_FAILURE_OR_TIMEOUT",
        Plain,
        |s, r| {
            s.task_acks_on_failure_or_timeout = r.bool()?;
            Ok(())
        },
    ),
    celery(
        "task_track_started",
        "CELERY_TASK_TRACK_STARTED",
        Plain,
        |s, r| {
            s.task_track_started = r.bool()?;
            Ok(())
        },
    ),
    celery(
        "task_ignore_result",
        "CELERY_TASK_IGNORE_RESULT",
        Plain,
        |s, r| {
            s.task_ignore_result = r.bool()?;
            Ok(())
        },
    ),
    celery(
        "task_store_errors_even_if_ignored",
        "CELERY_TASK_STORE_ERRORS_EVEN_IF_IGNORED",
        Plain,
        |s, r| {
            s.task_store_errors_even_if_ignored = r.bool()?;
            Ok(())
        },
    ),
    celery(
        "task_default_queue",
        "CELERY_TASK_DEFAULT_QUEUE",
        Plain,
        |s, r| {
            s.task_default_queue = r.non_empty_string()?;
            Ok(())
        },
    ),
    celery(
        "task_default_retry_delay",
        "CELERY_TASK_DEFAULT_RETRY_DELAY",
        Plain,
        |s, r| {
            s.task_default_retry_delay = r.seconds()?;
            Ok(())
        },
    ),
    celery(
        "task_time_limit",
        "CELERY_TASK_TIME_LIMIT",
        Plain,
        |s, r| {
            s.task_time_limit = r.optional_seconds()?;
            Ok(())
        },
    ),
    celery(
        "task_soft_time_limit",
        "CELERY_TASK_SOFT_TIME_LIMIT",
        Plain,
        |s, r| {
            s.task_soft_time_limit = r.optional_seconds()?;
            Ok(())
        },
    ),
    celery(
        "task_default_rate_limit",
        "CELERY_TASK_DEFAULT_RATE_LIMIT",
        Plain,
        |s, r| {
            s.task_default_rate_limit = r.optional_string()?.map(|v| v.parse()).transpose()?;
            Ok(())
        },
    ),
    celery("accept_content", "CELERY_ACCEPT_CONTENT", Plain, |s, r| {
        s.accept_content = non_empty_list(r)?;
        Ok(())
    }),
    celery(
        "result_accept_content",
        "CELERY_RESULT_ACCEPT_CONTENT",
        Plain,
        |s, r| {
            let list = r.list()?;
            s.result_accept_content = (!list.is_empty()).then_some(list);
            Ok(())
        },
    ),
    celery(
        "task_serializer",
        "CELERY_TASK_SERIALIZER",
        Plain,
        |s, r| {
            s.task_serializer = r.non_empty_string()?.parse()?;
            Ok(())
        },
    ),
    celery(
        "result_serializer",
        "CELERY_RESULT_SERIALIZER",
        Plain,
        |s, r| {
            s.result_serializer = r.non_empty_string()?.parse()?;
            Ok(())
        },
    ),
    celery(
        "event_serializer",
        "CELERY_EVENT_SERIALIZER",
        Plain,
        |s, r| {
            s.event_serializer = r.non_empty_string()?.parse()?;
            Ok(())
        },
    ),
    celery("security_key", "CELERY_SECURITY_KEY", Plain, |s, r| {
        s.security_key = r.optional_string()?.map(Into::into);
        Ok(())
    }),
    celery(
        "security_key_password",
        "CELERY_SECURITY_KEY_PASSWORD",
        Hidden,
        |s, r| {
            s.security_key_password = r.optional_string()?.map(Password::new);
            Ok(())
        },
    ),
    celery(
        "security_certificate",
        "CELERY_SECURITY_CERTIFICATE",
        Plain,
        |s, r| {
            s.security_certificate = r.optional_string()?.map(Into::into);
            Ok(())
        },
    ),
    celery(
        "security_cert_store",
        "CELERY_SECURITY_CERT_STORE",
        Plain,
        |s, r| {
            s.security_cert_store = r.optional_string()?;
            Ok(())
        },
    ),
    celery(
        "security_digest",
        "CELERY_SECURITY_DIGEST",
        Plain,
        |s, r| {
            s.security_digest = r.non_empty_string()?.parse()?;
            Ok(())
        },
    ),
    celery("timezone", "CELERY_TIMEZONE", Plain, |s, r| {
        s.timezone = r.non_empty_string()?;
        Ok(())
    }),
    celery(
        "worker_concurrency",
        "CELERY_WORKER_CONCURRENCY",
        Plain,
        |s, r| {
            let n: usize = r.integer()?;
            if n == 0 {
                return Err("must be at least 1".into());
            }
            s.worker_concurrency = n;
            s.worker_concurrency_given = true;
            Ok(())
        },
    ),
    celery(
        "worker_prefetch_multiplier",
        "CELERY_WORKER_PREFETCH_MULTIPLIER",
        Plain,
        |s, r| {
            s.worker_prefetch_multiplier = r.integer()?;
            Ok(())
        },
    ),
    celery(
        "worker_send_task_events",
        "CELERY_WORKER_SEND_TASK_EVENTS",
        Plain,
        |s, r| {
            s.worker_send_task_events = r.bool()?;
            Ok(())
        },
    ),
    celery(
        "worker_soft_shutdown_timeout",
        "CELERY_WORKER_SOFT_SHUTDOWN_TIMEOUT",
        Plain,
        |s, r| {
            s.worker_soft_shutdown_timeout = r.seconds()?;
            Ok(())
        },
    ),
    celery(
        "worker_max_tasks_per_child",
        "CELERY_WORKER_MAX_TASKS_PER_CHILD",
        Plain,
        |s, r| {
            s.worker_max_tasks_per_child = optional_positive(r)?;
            Ok(())
        },
    ),
    celery(
        "worker_max_memory_per_child",
        "CELERY_WORKER_MAX_MEMORY_PER_CHILD",
        Plain,
        |s, r| {
            s.worker_max_memory_per_child = optional_positive(r)?;
            Ok(())
        },
    ),
    celeriac("without_mingle", "CELERIAC_WITHOUT_MINGLE", |s, r| {
        s.without_mingle = r.bool()?;
        Ok(())
    }),
    celeriac("without_heartbeat", "CELERIAC_WITHOUT_HEARTBEAT", |s, r| {
        s.without_heartbeat = r.bool()?;
        Ok(())
    }),
    celery(
        "worker_hostname",
        "CELERY_WORKER_HOSTNAME",
        Plain,
        |s, r| {
            s.worker_hostname = r.non_empty_string()?;
            Ok(())
        },
    ),
    celery("queues", "CELERY_WORKER_QUEUES", Plain, |s, r| {
        s.queues = r.list()?;
        Ok(())
    }),
    celery("loglevel", "CELERY_WORKER_LOGLEVEL", Plain, |s, r| {
        s.loglevel = r.parsed()?;
        Ok(())
    }),
    celeriac(
        "dead_letter_policy",
        "CELERIAC_DEAD_LETTER_POLICY",
        |s, r| {
            s.dead_letter_policy = r.parsed()?;
            Ok(())
        },
    ),
    celeriac("dead_letter_key", "CELERIAC_DEAD_LETTER_KEY", |s, r| {
        s.dead_letter_key = r.non_empty_string()?;
        Ok(())
    }),
    celeriac("revoked_key", "CELERIAC_REVOKED_KEY", |s, r| {
        s.revoked_key = r.optional_string()?.filter(|k| !k.trim().is_empty());
        Ok(())
    }),
    celeriac("max_message_bytes", "CELERIAC_MAX_MESSAGE_BYTES", |s, r| {
        let n: u64 = r.integer()?;
        if n == 0 {
            return Err("must be at least 1".into());
        }
        s.max_message_bytes = n;
        Ok(())
    }),
    celeriac("eta_held_bytes", "CELERIAC_ETA_HELD_BYTES", |s, r| {
        s.eta_held_bytes = r.integer()?;
        Ok(())
    }),
    celeriac("reserved_bytes", "CELERIAC_RESERVED_BYTES", |s, r| {
        s.reserved_bytes = r.integer()?;
        Ok(())
    }),
    celeriac("metrics_port", "CELERIAC_METRICS_PORT", |s, r| {
        s.metrics_port = match r {
            Raw::Text(t) if t.trim().is_empty() => None,
            _ => Some(r.integer()?),
        };
        Ok(())
    }),
    celeriac("log_format", "CELERIAC_LOG_FORMAT", |s, r| {
        s.log_format = r.parsed()?;
        Ok(())
    }),
    celeriac("rate_limit_scope", "CELERIAC_RATE_LIMIT_SCOPE", |s, r| {
        s.rate_limit_scope = r.parsed()?;
        Ok(())
    }),
    celeriac("async_concurrency", "CELERIAC_ASYNC_CONCURRENCY", |s, r| {
        let n: usize = r.integer()?;
        if n == 0 {
            return Err("must be at least 1".into());
        }
        s.async_concurrency = Some(n);
        Ok(())
    }),
    celeriac("events_batch", "CELERIAC_EVENTS_BATCH", |s, r| {
        s.events_batch = r.integer()?;
        Ok(())
    }),
];

/// A count or size where empty and `0` mean "no limit", as Celery reads these settings.
fn optional_positive(r: Raw) -> Result<Option<u64>, String> {
    if let Raw::Text(t) = r {
        if t.trim().is_empty() {
            return Ok(None);
        }
    }
    let n: u64 = r.integer()?;
    Ok((n > 0).then_some(n))
}

fn non_empty_list(r: Raw) -> Result<Vec<String>, String> {
    let list = r.list()?;
    if list.is_empty() {
        return Err("must name at least one content type".into());
    }
    Ok(list)
}

/// The field with this TOML key in the given section (`celeriac = true` for `[celeriac]`).
pub(crate) fn by_key(key: &str, celeriac: bool) -> Option<&'static Field> {
    FIELDS
        .iter()
        .find(|f| f.key == key && f.celeriac == celeriac)
}

/// Applies `raw` to `settings`, turning a parse failure into an error that names `origin`.
pub(crate) fn apply(
    field: &Field,
    settings: &mut Settings,
    raw: Raw,
    origin: impl FnOnce() -> String,
) -> Result<(), super::ConfigError> {
    (field.apply)(settings, raw).map_err(|reason| super::ConfigError::InvalidValue {
        origin: origin(),
        value: raw.describe(field.secrecy),
        reason: redact_reason(field.secrecy, reason),
    })
}

/// Parse errors of URL settings may quote the URL: redact them too.
fn redact_reason(secrecy: Secrecy, reason: String) -> String {
    match secrecy {
        Secrecy::Plain => reason,
        Secrecy::Url => celeriac_secrets::hide_userinfo(&reason),
        Secrecy::Hidden => celeriac_secrets::redact(&reason),
    }
}
