//! Dynamic batching: requests from every connection wait in one queue per model; the model's
//! thread takes as many as fit in a batch (waiting briefly for more when the queue is short)
//! and runs them together.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use belink_core::wire::ErrorCode;

/// A failed request: the code and message the client gets.
pub type Failure = (ErrorCode, String);

/// One request waiting for a model.
pub struct Job<W, R> {
    pub work: W,
    pub reply: mpsc::Sender<Result<R, Failure>>,
    /// Cleared by the connection when its client goes away: the job is then skipped.
    pub alive: Arc<AtomicBool>,
    pub enqueued: Instant,
}

impl<W, R> Job<W, R> {
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }
}

pub struct Queue<W, R> {
    jobs: Mutex<VecDeque<Job<W, R>>>,
    ready: Condvar,
    depth: AtomicUsize,
    /// How much of a batch a job takes (texts, items).
    size: fn(&W) -> usize,
}

impl<W, R> Queue<W, R> {
    pub fn new(size: fn(&W) -> usize) -> Queue<W, R> {
        Queue { jobs: Mutex::new(VecDeque::new()), ready: Condvar::new(), depth: AtomicUsize::new(0), size }
    }

    pub fn submit(&self, job: Job<W, R>) {
        let mut jobs = self.jobs.lock().expect("queue lock");
        jobs.push_back(job);
        self.depth.store(jobs.len(), Ordering::Relaxed);
        self.ready.notify_one();
    }

    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Blocks for the next batch: jobs of at most `capacity` in all (a larger job alone),
    /// collected for at most `wait` after the first job is seen.
    pub fn next_batch(&self, capacity: usize, wait: Duration) -> Vec<Job<W, R>> {
        let mut jobs = self.jobs.lock().expect("queue lock");
        while jobs.is_empty() {
            jobs = self.ready.wait(jobs).expect("queue lock");
        }
        let deadline = Instant::now() + wait;
        loop {
            let queued: usize = jobs.iter().map(|j| (self.size)(&j.work)).sum();
            let now = Instant::now();
            if queued >= capacity || now >= deadline {
                break;
            }
            jobs = self.ready.wait_timeout(jobs, deadline - now).expect("queue lock").0;
        }
        let mut batch = Vec::new();
        let mut taken = 0;
        while let Some(job) = jobs.front() {
            let size = (self.size)(&job.work);
            if !batch.is_empty() && taken + size > capacity {
                break;
            }
            taken += size;
            batch.push(jobs.pop_front().expect("front exists"));
        }
        self.depth.store(jobs.len(), Ordering::Relaxed);
        batch
    }

    /// Like [`Queue::next_batch`], but only jobs whose client still waits: returns a non-empty
    /// batch and how many jobs were dropped on the way because their client went away.
    pub fn next_live_batch(&self, capacity: usize, wait: Duration) -> (Vec<Job<W, R>>, usize) {
        let mut abandoned = 0;
        loop {
            let (live, dead): (Vec<_>, Vec<_>) = self.next_batch(capacity, wait).into_iter().partition(Job::is_alive);
            abandoned += dead.len();
            if !live.is_empty() {
                return (live, abandoned);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(size: usize) -> (Job<usize, ()>, mpsc::Receiver<Result<(), Failure>>) {
        let (reply, answer) = mpsc::channel();
        (Job { work: size, reply, alive: Arc::new(AtomicBool::new(true)), enqueued: Instant::now() }, answer)
    }

    #[test]
    fn batches_fill_up_to_capacity_and_a_big_job_goes_alone() {
        let queue: Queue<usize, ()> = Queue::new(|w| *w);
        for size in [3, 4, 5, 100, 1] {
            queue.submit(job(size).0);
        }
        assert_eq!(queue.depth(), 5);
        let sizes = |batch: Vec<Job<usize, ()>>| batch.iter().map(|j| j.work).collect::<Vec<_>>();
        assert_eq!(sizes(queue.next_batch(10, Duration::ZERO)), [3, 4]);
        assert_eq!(sizes(queue.next_batch(10, Duration::ZERO)), [5]);
        assert_eq!(sizes(queue.next_batch(10, Duration::ZERO)), [100]);
        assert_eq!(sizes(queue.next_batch(10, Duration::ZERO)), [1]);
        assert_eq!(queue.depth(), 0);
    }

    #[test]
    fn jobs_whose_client_left_are_dropped_and_counted() {
        let queue: Queue<usize, ()> = Queue::new(|w| *w);
        let gone = job(1).0;
        gone.alive.store(false, Ordering::Release);
        queue.submit(gone);
        queue.submit(job(2).0);
        // The first batch holds only the abandoned job: the call goes on to the next one.
        let (live, abandoned) = queue.next_live_batch(1, Duration::ZERO);
        assert_eq!(live.iter().map(|j| j.work).collect::<Vec<_>>(), [2]);
        assert_eq!(abandoned, 1);
    }
}
