//! The Rust API: `Worker::builder().task("name", f).settings(s).build()?.run().await`.

use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::Settings;
use crate::launcher;
use crate::registry::Registry;
use crate::task::{BlockingHandler, FnHandler, TaskContext, TaskError, TaskOptions};

/// A configured worker, ready to run.
pub struct Worker {
    settings: Settings,
    registry: Registry,
}

/// Builds a [`Worker`]: register tasks, give settings.
#[derive(Default)]
pub struct WorkerBuilder {
    settings: Option<Settings>,
    registry: Registry,
}

impl Worker {
    /// Start building a worker.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder::default()
    }

    /// The registered tasks.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The effective settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Run until SIGTERM/SIGINT (first: warm shutdown; second: cold).
    pub async fn run(self) -> anyhow::Result<()> {
        let stop = launcher::signal_stop_requests()?;
        let mut registry = self.registry;
        crate::query_tasks::install(&self.settings, &mut registry).await?;
        launcher::run(self.settings, registry, stop).await
    }

    /// Run until `stop` resolves (then shut down warm).
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop = launcher::stop_requests_from(stop);
        let mut registry = self.registry;
        crate::query_tasks::install(&self.settings, &mut registry).await?;
        launcher::run(self.settings, registry, stop).await
    }
}

impl WorkerBuilder {
    /// Register `f` under the Celery task name producers use. `A` is bound from the call's
    /// arguments (a tuple for positional ones, a struct for positional and keyword ones), `R` is
    /// the JSON result.
    pub fn task<F, A, R, Fut>(self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(TaskContext, A) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        Fut: Future<Output = Result<R, TaskError>> + Send + 'static,
    {
        self.task_with_options(name, TaskOptions::default(), f)
    }

    /// [`WorkerBuilder::task`] with per-task options.
    pub fn task_with_options<F, A, R, Fut>(
        mut self,
        name: impl Into<String>,
        options: TaskOptions,
        f: F,
    ) -> Self
    where
        F: Fn(TaskContext, A) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        Fut: Future<Output = Result<R, TaskError>> + Send + 'static,
    {
        self.registry
            .insert(name, Arc::new(FnHandler::new(f)), options);
        self
    }

    /// Register a blocking (CPU-bound or synchronous) function: each run gets its own OS thread.
    /// At the hard time limit the run fails and the thread is abandoned (threads cannot be
    /// killed); loops should call [`TaskContext::check_time_limits`] to stop in time.
    pub fn blocking_task<F, A, R>(self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(TaskContext, A) -> Result<R, TaskError> + Send + Sync + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
    {
        self.blocking_task_with_options(name, TaskOptions::default(), f)
    }

    /// [`WorkerBuilder::blocking_task`] with per-task options.
    pub fn blocking_task_with_options<F, A, R>(
        mut self,
        name: impl Into<String>,
        options: TaskOptions,
        f: F,
    ) -> Self
    where
        F: Fn(TaskContext, A) -> Result<R, TaskError> + Send + Sync + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
    {
        self.registry
            .insert(name, Arc::new(BlockingHandler::new(f)), options);
        self
    }

    /// Use these settings (default: Celery's defaults).
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Finish.
    pub fn build(self) -> Worker {
        Worker {
            settings: self.settings.unwrap_or_default(),
            registry: self.registry,
        }
    }
}
