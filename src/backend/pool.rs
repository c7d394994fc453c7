//! The bounded worker pool: `max_workers` OS threads take jobs from a queue of `queue_size`. The
//! dispatcher never blocks: a full queue is reported back at once so the caller gets an error reply.
//!
//! NOTE: a mutex and a condition variable, not a channel: crossbeam's channel spins and yields before it
//! parks, and with six idle workers on two cores every job made them all spin (about 3 involuntary
//! context switches per request). Only as many workers are woken as there are jobs.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// A unit of work run on a worker thread.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// Runs a worker thread's job loop (`body`), e.g. inside some per-thread context.
pub type ThreadScope = dyn Fn(&mut (dyn FnMut() + Send)) + Send + Sync;

struct State {
    jobs: VecDeque<Job>,
    /// Workers waiting for a job.
    idle: usize,
    closed: bool,
}

struct Queue {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
}

impl Queue {
    /// The next job; `None` once the pool is closed and the queue is empty.
    fn take(&self) -> Option<Job> {
        let mut st = self.state.lock().expect("pool lock");
        loop {
            if let Some(job) = st.jobs.pop_front() {
                return Some(job);
            }
            if st.closed {
                return None;
            }
            st.idle += 1;
            st = self.ready.wait(st).expect("pool lock");
            st.idle -= 1;
        }
    }
}

/// Fixed-size pool of worker threads with a bounded queue.
pub struct WorkerPool {
    queue: Arc<Queue>,
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
        let queue = Arc::new(Queue {
            state: Mutex::new(State {
                jobs: VecDeque::with_capacity(queue_size.max(1)),
                idle: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            capacity: queue_size.max(1),
        });
        let mut pool = Self {
            queue,
            threads: Vec::with_capacity(workers.max(1)),
        };
        for i in 0..workers.max(1) {
            let queue = pool.queue.clone();
            let scope = scope.clone();
            let spawned = std::thread::Builder::new().name(format!("{name}-{i}")).spawn(move || {
                let mut body = move || {
                    while let Some(job) = queue.take() {
                        job();
                    }
                };
                scope(&mut body);
            });
            match spawned {
                Ok(t) => pool.threads.push(t),
                Err(e) => {
                    pool.close_and_join();
                    return Err(e);
                }
            }
        }
        Ok(pool)
    }

    /// Queue a job; gives it back when the queue is full.
    pub fn try_submit(&self, job: Job) -> Result<(), Job> {
        let mut st = self.queue.state.lock().expect("pool lock");
        if st.closed || st.jobs.len() >= self.queue.capacity {
            return Err(job);
        }
        st.jobs.push_back(job);
        // NOTE: no wake-up call (a futex syscall) when every worker is busy: each looks at the queue again
        let wake = st.idle > 0;
        drop(st);
        if wake {
            self.queue.ready.notify_one();
        }
        Ok(())
    }

    /// Whether a job submitted now is accepted (the queue is open and not full).
    pub fn has_room(&self) -> bool {
        let st = self.queue.state.lock().expect("pool lock");
        !st.closed && st.jobs.len() < self.queue.capacity
    }

    /// Whether a job submitted now is taken at once (a worker waits with nothing queued ahead of it).
    pub fn has_idle_worker(&self) -> bool {
        let st = self.queue.state.lock().expect("pool lock");
        st.idle > st.jobs.len()
    }

    /// Jobs waiting in the queue.
    pub fn queued(&self) -> usize {
        self.queue.state.lock().expect("pool lock").jobs.len()
    }

    fn close_and_join(&mut self) {
        self.queue.state.lock().expect("pool lock").closed = true;
        self.queue.ready.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Stop taking jobs, let queued and running ones finish, and join the threads (blocking).
    pub fn join(mut self) {
        self.close_and_join();
    }
}

impl Drop for WorkerPool {
    /// Without `join`: the threads finish the queued jobs and end on their own.
    fn drop(&mut self) {
        if let Ok(mut st) = self.queue.state.lock() {
            st.closed = true;
        }
        self.queue.ready.notify_all();
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
        assert!(!pool.has_room());
        assert!(pool.try_submit(Box::new(|| {})).is_err(), "queue of 1 is full");
        gate.wait();
        pool.join();
        assert_eq!(done.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn tells_whether_a_job_is_taken_at_once() {
        let pool = WorkerPool::start("t", 1, 2).unwrap();
        let t0 = std::time::Instant::now();
        while !pool.has_idle_worker() && t0.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::yield_now(); // the thread starts and waits
        }
        assert!(pool.has_idle_worker(), "a started worker waits for work");
        let gate = Arc::new(Barrier::new(2));
        let g = gate.clone();
        pool.try_submit(Box::new(move || {
            g.wait();
        }))
        .map_err(|_| ())
        .unwrap();
        let t0 = std::time::Instant::now();
        while pool.queued() > 0 && t0.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::yield_now();
        }
        assert!(!pool.has_idle_worker(), "its only worker is busy");
        gate.wait();
        drop(pool); // without join: the thread ends on its own
    }
}
