//! The owner's part for dcgm-exporter's job mapping files
//! (`crate::dcgm`): after every decision, the files the running replicas
//! call for, handed to the writer task when they differ from the last
//! ones handed over. Off (no directory), it does nothing.

use std::path::PathBuf;
use std::sync::Arc;

use orch_core::supervise::Supervisor;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::dcgm::{self, JobFiles, writer};

#[derive(Debug, Default)]
pub(super) struct JobMapping {
    /// The last files handed to the writer.
    last: Option<JobFiles>,
    to_writer: Option<watch::Sender<writer::Wanted>>,
    writer: Option<JoinHandle<()>>,
}

impl JobMapping {
    /// Keeps the files of `dir`, or nothing for `None`.
    pub(super) fn new(dir: Option<PathBuf>) -> Self {
        match dir {
            Some(dir) => {
                tracing::info!(dir = %dir.display(), "dcgm-exporter job mapping files kept");
                let (tx, task) = writer::spawn(dir);
                JobMapping {
                    last: None,
                    to_writer: Some(tx),
                    writer: Some(task),
                }
            }
            None => JobMapping::default(),
        }
    }

    /// Hands the files `sup` calls for to the writer if they changed.
    /// Nothing is written before Docker is listed (the running replicas
    /// are not known yet: the files of the last run stay as they are).
    pub(super) fn update(&mut self, sup: &Supervisor) {
        let Some(tx) = &self.to_writer else {
            return;
        };
        if !sup.docker_up() {
            return;
        }
        let files = dcgm::of(sup);
        if self.last.as_ref() != Some(&files) {
            let _ = tx.send(Some(Arc::new(files.clone())));
            self.last = Some(files);
        }
    }

    /// Lets the writer write the last files and waits for it.
    pub(super) async fn finish(&mut self) {
        self.to_writer = None;
        if let Some(w) = self.writer.take() {
            let _ = w.await;
        }
    }
}
