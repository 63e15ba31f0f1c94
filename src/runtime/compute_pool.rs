//! A fixed set of compute threads fed by one queue.
//!
//! Why not `spawn_blocking` behind a semaphore (what the server did first): there a finished
//! job wakes its async task, which releases the permit, which wakes the next waiting task, which
//! hands its job to a blocking thread — three wake-ups, on every request under load, during which
//! a core that could compute waits for the scheduler. A pool thread takes the next queued job the
//! moment it finishes one. The queue needs no bound of its own: the server admits at most
//! `max_concurrency` requests, so at most that many jobs ever wait.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex};
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// `threads` named OS threads that run submitted closures in arrival order. The threads end when
/// the pool is dropped (after finishing the jobs already queued).
pub struct ComputePool {
    queue: mpsc::Sender<Job>,
}

/// Why a job gave no answer.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PoolError {
    #[error("panicked: {0}")]
    Panicked(String),
    #[error("the compute pool has stopped")]
    Stopped,
}

impl ComputePool {
    pub fn new(name: &str, threads: usize) -> std::io::Result<ComputePool> {
        let (queue, jobs) = mpsc::channel::<Job>();
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..threads.max(1) {
            let jobs = jobs.clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || loop {
                    // The guard is a temporary: the lock is released before the job runs.
                    let next = match jobs.lock() {
                        Ok(jobs) => jobs.recv(),
                        Err(_) => return,
                    };
                    match next {
                        Ok(job) => job(),
                        Err(mpsc::RecvError) => return,
                    }
                })?;
        }
        Ok(ComputePool { queue })
    }

    /// Runs `f` on a pool thread and waits for its result. A job whose caller has gone (the
    /// request was dropped) by the time a thread is free is skipped, not computed for nobody.
    pub async fn run<T, F>(&self, f: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (done, answer) = oneshot::channel();
        let job: Job = Box::new(move || {
            if !done.is_closed() {
                let _ = done.send(catch_unwind(AssertUnwindSafe(f)));
            }
        });
        self.queue.send(job).map_err(|_| PoolError::Stopped)?;
        match answer.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(panic)) => Err(PoolError::Panicked(panic_message(panic.as_ref()))),
            Err(_) => Err(PoolError::Stopped),
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn answers_each_job_and_never_runs_more_than_its_threads_at_once() {
        let pool = Arc::new(ComputePool::new("test", 2).unwrap());
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut jobs = Vec::new();
        for i in 0..8usize {
            let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
            jobs.push(tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                    i * i
                })
                .await
            }));
        }
        for (i, job) in jobs.into_iter().enumerate() {
            assert_eq!(job.await.unwrap(), Ok(i * i));
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_thread_survives() {
        let pool = ComputePool::new("test", 1).unwrap();
        let err = pool.run(|| -> u8 { panic!("bad shard") }).await;
        assert_eq!(err, Err(PoolError::Panicked("bad shard".into())));
        assert_eq!(pool.run(|| 7).await, Ok(7));
    }

    #[tokio::test]
    async fn a_job_whose_caller_left_is_skipped() {
        let pool = Arc::new(ComputePool::new("test", 1).unwrap());
        let ran = Arc::new(AtomicUsize::new(0));
        // Occupy the only thread, queue a job, then drop that job's caller.
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let busy = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(move || wait.recv().ok()).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let queued = {
            let (pool, ran) = (pool.clone(), ran.clone());
            tokio::spawn(async move { pool.run(move || ran.fetch_add(1, Ordering::SeqCst)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        queued.abort();
        let _ = queued.await;
        release.send(()).unwrap();
        assert_eq!(busy.await.unwrap(), Ok(Some(())));
        // A later job runs after the skipped one, on the same thread.
        assert_eq!(pool.run(|| 1).await, Ok(1));
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }
}
