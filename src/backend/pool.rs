//! The bounded worker pool: `max_workers` OS threads take jobs from a queue of `queue_size`. The
//! dispatcher never blocks: a full queue is reported back at once so the caller gets an error reply.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

/// A unit of work run on a worker thread.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Runs a worker thread's job loop (`body`), e.g. inside some per-thread context.
pub type ThreadScope = dyn Fn(&mut (dyn FnMut() + Send)) + Send + Sync;

/// Fixed-size pool of worker threads with a bounded queue.
pub struct WorkerPool {
    tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    /// Start `workers` threads named `{name}-{i}` sharing a queue of `queue_size` jobs.
    pub fn start(name: &str, workers: usize, queue_size: usize) -> std::io::Result<Self> {
        Self::start_scoped(
            name,
            workers,
            queue_size,
            Arc::new(|body: &mut (dyn FnMut() + Send)| body()),
        )
    }

    /// Like [`WorkerPool::start`], but each thread runs its whole job loop inside `scope` (e.g. to set up
    /// per-thread state once instead of per job).
    pub fn start_scoped(
        name: &str,
        workers: usize,
        queue_size: usize,
        scope: Arc<ThreadScope>,
    ) -> std::io::Result<Self> {
        let (tx, rx): (Sender<Job>, Receiver<Job>) = bounded(queue_size.max(1));
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers.max(1) {
            let rx = rx.clone();
            let scope = scope.clone();
            threads.push(std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
                let mut body = move || {
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                };
                scope(&mut body);
            })?);
        }
        Ok(Self { tx: Some(tx), threads })
    }

    /// Queue a job; gives it back when the queue is full.
    pub fn try_submit(&self, job: Job) -> Result<(), Job> {
        match self.tx.as_ref() {
            Some(tx) => tx.try_send(job).map_err(|e| match e {
                TrySendError::Full(j) | TrySendError::Disconnected(j) => j,
            }),
            None => Err(job),
        }
    }

    /// Jobs waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.as_ref().map_or(0, |t| t.len())
    }

    /// Stop taking jobs, let queued and running ones finish, and join the threads (blocking).
    pub fn join(mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;

    #[test]
    fn runs_jobs_and_reports_overflow() {
        let pool = WorkerPool::start("t", 1, 1).unwrap();
        let gate = Arc::new(Barrier::new(2));
        let done = Arc::new(AtomicUsize::new(0));
        // occupy the only worker
        let g = gate.clone();
        let d = done.clone();
        pool.try_submit(Box::new(move || {
            g.wait();
            d.fetch_add(1, Ordering::SeqCst);
        }))
        .map_err(|_| ())
        .unwrap();
        // wait until the worker took it, then fill the queue
        let t0 = std::time::Instant::now();
        while pool.queued() > 0 && t0.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::yield_now();
        }
        let d = done.clone();
        assert!(pool
            .try_submit(Box::new(move || {
                d.fetch_add(1, Ordering::SeqCst);
            }))
            .is_ok());
        assert!(pool.try_submit(Box::new(|| {})).is_err(), "queue of 1 is full");
        gate.wait();
        pool.join();
        assert_eq!(done.load(Ordering::SeqCst), 2);
    }
}
