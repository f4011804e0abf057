//! The task registry: Celery task names mapped to Rust handlers and their options.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::process::ProcessFn;
use crate::task_api::data::DataAccess;
use crate::task_api::{Handler, TaskOptions};

/// One registered task.
#[derive(Clone)]
pub(crate) struct RegisteredTask {
    /// The function to run.
    pub(crate) handler: Arc<dyn Handler>,
    /// Its options.
    pub(crate) options: TaskOptions,
}

/// Task name → task. Names are the ones producers use (`"tickets.get_ticket"`).
#[derive(Clone, Default)]
pub(crate) struct Registry {
    tasks: BTreeMap<String, RegisteredTask>,
    process_fns: BTreeMap<String, Arc<dyn ProcessFn>>,
    data: Option<Arc<DataAccess>>,
}

impl Registry {
    /// Register (or replace) a task under `name`.
    pub(crate) fn insert(
        &mut self,
        name: impl Into<String>,
        handler: Arc<dyn Handler>,
        options: TaskOptions,
    ) {
        self.tasks
            .insert(name.into(), RegisteredTask { handler, options });
    }

    /// Whether some task runs as async code, and whether some runs on a thread or in a task
    /// process (see [`Handler::on_threads`]).
    pub(crate) fn kinds(&self) -> (bool, bool) {
        let threads = self
            .tasks
            .values()
            .filter(|t| t.handler.on_threads())
            .count();
        (threads < self.tasks.len(), threads > 0)
    }

    /// Register the function a task process runs for `name` (see [`crate::process`]).
    pub(crate) fn insert_process_fn(&mut self, name: impl Into<String>, f: Arc<dyn ProcessFn>) {
        self.process_fns.insert(name.into(), f);
    }

    /// The function a task process runs for `name`.
    pub(crate) fn process_fn(&self, name: &str) -> Option<&Arc<dyn ProcessFn>> {
        self.process_fns.get(name)
    }

    /// Look a task up by name.
    pub(crate) fn get(&self, name: &str) -> Option<&RegisteredTask> {
        self.tasks.get(name)
    }

    /// Registered names, sorted.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.tasks.keys().map(String::as_str)
    }

    /// Give every task the shared cache and sources ([`crate::TaskContext::data`]).
    pub(crate) fn set_data(&mut self, data: Arc<DataAccess>) {
        self.data = Some(data);
    }

    /// The shared cache and sources, when configured.
    pub(crate) fn data(&self) -> Option<&Arc<DataAccess>> {
        self.data.as_ref()
    }

    /// Whether no task is registered.
    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}
