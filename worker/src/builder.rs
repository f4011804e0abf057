//! The Rust API: `Worker::builder().register(add).task("name", f).settings(s).build()?.run().await`.

use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::Settings;
use crate::launcher;
use crate::message::time_limits::Polled;
use crate::observe::lifecycle::Lifecycle;
use crate::process::{FnProcess, Pool, ProcessHandler};
use crate::task_api::registry::Registry;
use crate::task_api::{
    BlockingHandler, FnHandler, TaskContext, TaskDefinition, TaskError, TaskOptions,
};

/// A configured worker, ready to run.
pub struct Worker {
    settings: Settings,
    registry: Registry,
    hooks: Vec<Arc<dyn Lifecycle>>,
}

/// Builds a [`Worker`]: register tasks, give settings.
#[derive(Default)]
pub struct WorkerBuilder {
    settings: Option<Settings>,
    registry: Registry,
    processes: Option<Arc<Pool>>,
    hooks: Vec<Arc<dyn Lifecycle>>,
}

impl Worker {
    /// Start building a worker.
    ///
    /// ```
    /// use celeriac_worker::{PyException, PyNumber, TaskContext, TaskError, Worker};
    ///
    /// // The easiest way (as the demo): a function declared as in Python, under its Celery name.
    /// #[celeriac_worker::task(name = "demo.add")] // def add(a, b): return a + b
    /// async fn add(a: PyNumber, b: PyNumber) -> Result<PyNumber, PyException> {
    ///     a + b
    /// }
    ///
    /// let builder = Worker::builder()
    ///     .register(add)
    ///     // A closure whose positional arguments bind as a tuple.
    ///     .task("demo.upper", |_ctx: TaskContext, (text,): (String,)| async move {
    ///         Ok::<_, TaskError>(text.to_uppercase())
    ///     });
    /// let worker = builder.build(); // Celery's default settings; see `.settings(..)`
    /// # drop(worker);
    ///
    /// // `celeriac worker`'s flags and `CELERY_*` environment, logging, run until SIGTERM:
    /// // `celeriac_worker::cli::worker::run(builder, &args)`; or, settings given:
    /// # async fn run(worker: Worker) -> anyhow::Result<()> {
    /// worker.run().await
    /// # }
    /// ```
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder::default()
    }

    /// The effective settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Run until SIGTERM/SIGINT (first: warm shutdown; second: cold). In a task process (see
    /// [`WorkerBuilder::process_task`]) this serves the child role instead and never returns.
    pub async fn run(self) -> anyhow::Result<()> {
        self.serve_if_task_process();
        let stop = launcher::signal_stop_requests()?;
        let mut registry = self.registry;
        crate::query_tasks::install(&self.settings, &mut registry).await?;
        launcher::run(self.settings, registry, self.hooks, stop).await
    }

    /// Run until `stop` resolves (then shut down warm).
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.serve_if_task_process();
        let stop = launcher::stop_requests_from(stop);
        let mut registry = self.registry;
        crate::query_tasks::install(&self.settings, &mut registry).await?;
        launcher::run(self.settings, registry, self.hooks, stop).await
    }

    /// In a task process started for process tasks: serve them, then exit (never returns).
    /// Elsewhere: nothing.
    pub fn serve_if_task_process(&self) {
        if crate::process::is_child() {
            crate::process::serve(&self.registry);
        }
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

    /// Register a task declared with [`#[celeriac_worker::task]`](macro@crate::task) under its
    /// name, with the options of its attribute.
    pub fn register<T: TaskDefinition>(self, task: T) -> Self {
        let options = task.options();
        self.register_with_options(task, options)
    }

    /// [`WorkerBuilder::register`] with other options than the attribute's.
    pub fn register_with_options<T: TaskDefinition>(
        mut self,
        task: T,
        options: TaskOptions,
    ) -> Self {
        let name = task.name();
        let handler: Arc<dyn crate::task_api::Handler> = if task.blocking() {
            Arc::new(Polled(task))
        } else {
            Arc::new(task)
        };
        self.registry.insert(name, handler, options);
        self
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
    /// killed); loops should call [`TaskContext::check_time_limits`] to stop in time. For code
    /// that must be stopped for sure, use [`WorkerBuilder::process_task`] (a child process,
    /// killed at the hard limit) instead.
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
            .insert(name, Arc::new(Polled(BlockingHandler::new(f))), options);
        self
    }

    /// Register a CPU-bound or blocking function to run in a **task process** (a child process
    /// of the worker, reused between runs): at the hard time limit the
    /// child is killed, so the run stops for sure even if the function never checks anything.
    /// The soft limit is seen with [`crate::check_soft_time_limit`]. A child that dies fails the run with
    /// `WorkerLostError`. The function gets only its arguments (no [`TaskContext`]).
    pub fn process_task<F, A, R>(self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(A) -> Result<R, TaskError> + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
    {
        self.process_task_with_options(name, TaskOptions::default(), f)
    }

    /// [`WorkerBuilder::process_task`] with per-task options.
    pub fn process_task_with_options<F, A, R>(
        mut self,
        name: impl Into<String>,
        options: TaskOptions,
        f: F,
    ) -> Self
    where
        F: Fn(A) -> Result<R, TaskError> + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
    {
        let name = name.into();
        let pool = self.processes.get_or_insert_with(Arc::default).clone();
        self.registry.insert(
            name.clone(),
            Arc::new(Polled(ProcessHandler::new(pool))),
            options,
        );
        self.registry
            .insert_process_fn(name, Arc::new(FnProcess::new(f)));
        self
    }

    /// In a task process: serve the registered process tasks, then exit (never returns).
    /// Elsewhere: nothing. `celeriac_worker::cli::worker::run` calls it first.
    pub fn serve_if_task_process(&self) {
        if crate::process::is_child() {
            crate::process::serve(&self.registry);
        }
    }

    /// Tell `hook` what happens to every task message (received, started, succeeded, failed,
    /// retried, revoked, rejected), after the built-in events, metrics and telemetry; hooks are
    /// called in the order they were added. See [`Lifecycle`].
    pub fn hook(mut self, hook: impl Lifecycle) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Use these settings (default: Celery's defaults).
    pub fn settings(mut self, settings: Settings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Finish.
    pub fn build(self) -> Worker {
        let settings = self.settings.unwrap_or_default();
        if let Some(pool) = &self.processes {
            pool.set_limits(
                settings.worker_max_tasks_per_child,
                settings.worker_max_memory_per_child,
            );
        }
        Worker {
            settings,
            registry: self.registry,
            hooks: self.hooks,
        }
    }
}
