//! A one-shot run of the daemon's actors (`filemetasync scan`): the scanner scans every root
//! once and hands its reports here; the uploader, which has worked alongside, stops when what
//! is in flight is done (or, with `drain`, when the queue is empty); then the run shuts down.

use super::supervisor::{Shutdown, Supervisor};
use crate::scan::RootReport;
use crate::upload::UploadControl;
use crate::upload_controls::UploadKnobs;
use actix::Addr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

pub struct OnceRun {
    /// Shared by every uploader instance of this run (a restarted one goes on from it).
    pub control: Arc<UploadControl>,
    uploads: bool,
    reports: Mutex<Option<Vec<RootReport>>>,
    failure: Mutex<Option<String>>,
    supervisor: OnceLock<Addr<Supervisor>>,
}

impl OnceRun {
    /// `uploads`: whether an uploader runs (not with `scan --no-upload`); `drain`: it goes on
    /// until the queue is empty (`scan --wait`).
    pub fn new(uploads: bool, drain: bool, knobs: Arc<UploadKnobs>) -> Arc<OnceRun> {
        Arc::new(OnceRun {
            control: Arc::new(UploadControl {
                producing: AtomicBool::new(true),
                drain,
                stop: AtomicBool::new(false),
                wake: Default::default(),
                knobs,
            }),
            uploads,
            reports: Mutex::new(None),
            failure: Mutex::new(None),
            supervisor: OnceLock::new(),
        })
    }

    pub(super) fn attach(&self, supervisor: Addr<Supervisor>) {
        let _ = self.supervisor.set(supervisor);
    }

    /// The scanner has scanned every root: uploads end after what is queued now (or stop).
    pub(super) fn scan_finished(&self, reports: Vec<RootReport>) {
        *self.reports.lock().unwrap_or_else(|e| e.into_inner()) = Some(reports);
        self.control.finish_producing();
        if !self.uploads {
            self.end("scan finished");
        }
    }

    /// The uploader's loop has ended after the scan.
    pub(super) fn uploads_finished(&self) {
        self.end("scan and uploads finished");
    }

    /// The uploads cannot go on (the catalog is gone): the run ends with this reason.
    pub(super) fn uploads_failed(&self, reason: String) {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(reason);
        self.control.request_stop();
        self.end("the uploads failed");
    }

    fn end(&self, reason: &str) {
        if let Some(supervisor) = self.supervisor.get() {
            supervisor.do_send(Shutdown {
                reason: reason.to_owned(),
            });
        }
    }

    /// The scanner's reports, once it has finished (None: the run was cut short).
    pub fn take_reports(&self) -> Option<Vec<RootReport>> {
        self.reports.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Why the uploads stopped early, if they did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
