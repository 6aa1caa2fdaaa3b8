//! A small, bounded pool of threads for password hashing.
//!
//! bcrypt takes tens of milliseconds of CPU. Run on a proxy worker thread it
//! would stall every transfer multiplexed on that thread; run on an
//! unbounded pool, a login storm would eat every core. These threads belong
//! to no async runtime, so any of Pingora's runtimes can submit work.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, Semaphore};

type Job = Box<dyn FnOnce() + Send>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("the hashing pool has shut down")]
    Closed,
}

pub struct HashPool {
    jobs: Mutex<mpsc::Sender<Job>>,
    /// Bounds the queue: waiting callers wait asynchronously, off any thread.
    slots: Arc<Semaphore>,
}

impl HashPool {
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("portcullis-hash-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(guard) => guard.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                })?;
        }
        Ok(HashPool {
            jobs: Mutex::new(tx),
            slots: Arc::new(Semaphore::new(threads.max(1) * 32)),
        })
    }

    /// Runs `f` on a pool thread and waits for its result without blocking
    /// the caller's thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let _slot = self.slots.acquire().await.map_err(|_| PoolError::Closed)?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs
            .lock()
            .map_err(|_| PoolError::Closed)?
            .send(job)
            .map_err(|_| PoolError::Closed)?;
        rx.await.map_err(|_| PoolError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_on_pool_threads() {
        let pool = HashPool::new(2).unwrap();
        let name = pool
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("portcullis-hash-"));
    }

    #[tokio::test]
    async fn many_jobs_all_complete() {
        let pool = Arc::new(HashPool::new(2).unwrap());
        let mut handles = Vec::new();
        for i in 0..200u32 {
            let pool = Arc::clone(&pool);
            handles.push(tokio::spawn(async move { pool.run(move || i * 2).await }));
        }
        let mut sum = 0;
        for h in handles {
            sum += h.await.unwrap().unwrap();
        }
        assert_eq!(sum, (0..200).map(|i| i * 2).sum::<u32>());
    }
}
