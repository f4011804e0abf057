//! Applying the `celeriac worker` command-line flags, named like Celery's. The flags that set a
//! setting are declared with it in [`settings`](super::settings); `-X` and the flags accepted
//! for Celery command lines only are handled here.

use super::declare::apply;
use super::settings::{Settings, WorkerArgs, FIELDS};
use super::value::Raw;
use super::ConfigError;

impl WorkerArgs {
    /// Warnings for Celery flags that were given and have no effect here, to log once logging
    /// is set up.
    pub fn ignored_flags(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(app) = &self.app {
            out.push(format!(
                "-A {app} ignored: celeriac's tasks are compiled into the worker"
            ));
        }
        if let Some(pool) = &self.pool {
            out.push(format!(
                "-P {pool} ignored: each task runs as it was registered (async, on a thread or in a task process)"
            ));
        }
        if let Some(scale) = &self.autoscale {
            out.push(format!(
                "--autoscale {scale} ignored: -c is fixed; scale replicas instead (KEDA, see deploy/)"
            ));
        }
        out
    }
}

/// Applies the flags that were given to `settings`.
pub(crate) fn apply_args(settings: &mut Settings, args: &WorkerArgs) -> Result<(), ConfigError> {
    for field in FIELDS {
        let Some(flag) = &field.flag else { continue };
        let Some(value) = (flag.given)(args) else {
            continue;
        };
        apply(field, settings, Raw::Text(&value), || {
            format!("flag --{}", flag.long)
        })?;
    }
    exclude_queues(settings, &args.exclude_queues)
}

/// `-X`: consume the queues of `-Q` (or the default queue) except these, as Celery's worker.
fn exclude_queues(settings: &mut Settings, excluded: &[String]) -> Result<(), ConfigError> {
    if excluded.is_empty() {
        return Ok(());
    }
    let mut queues = if settings.queues.is_empty() {
        vec![settings.task_default_queue.clone()]
    } else {
        std::mem::take(&mut settings.queues)
    };
    queues.retain(|q| !excluded.iter().any(|x| x.trim() == q));
    if queues.is_empty() {
        return Err(ConfigError::InvalidValue {
            origin: "flag --exclude-queues".into(),
            value: format!("{:?}", excluded.join(",")),
            reason: "excludes every queue the worker would consume".into(),
        });
    }
    settings.queues = queues;
    Ok(())
}
