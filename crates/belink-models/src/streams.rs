//! Running independent chunks of work on all CPU cores.
//!
//! Small transformer layers parallelize poorly inside one operation (threads spend their time
//! synchronizing), so when there are several chunks each core takes whole chunks on its own
//! single-thread pool (data parallelism); a lone chunk gets every core (operator parallelism).

use std::sync::atomic::{AtomicUsize, Ordering};

use rayon::{ThreadPool, ThreadPoolBuilder};

pub struct Streams {
    /// One single-thread pool per core.
    narrow: Vec<ThreadPool>,
    /// One pool with every core.
    wide: ThreadPool,
}

impl Streams {
    /// `threads` 0 uses every available core.
    pub fn new(threads: usize) -> Streams {
        let threads =
            if threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { threads };
        let pool = |n: usize, name: &'static str| {
            ThreadPoolBuilder::new()
                .num_threads(n)
                .thread_name(move |i| format!("{name}-{i}"))
                .build()
                .expect("creating a thread pool")
        };
        Streams { narrow: (0..threads).map(|_| pool(1, "stream")).collect(), wide: pool(threads, "wide") }
    }

    /// Runs `f` with every core available to its operations.
    pub fn install<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.wide.install(f)
    }

    pub fn threads(&self) -> usize {
        self.narrow.len()
    }

    /// Runs `work` on every chunk and returns the results in chunk order; the first error wins.
    pub fn run<T: Send, E: Send>(
        &self,
        chunks: &[Vec<usize>],
        work: impl Fn(&[usize]) -> Result<T, E> + Sync,
    ) -> Result<Vec<T>, E> {
        if chunks.len() <= 1 {
            return self.wide.install(|| chunks.iter().map(|c| work(c)).collect());
        }
        let next = AtomicUsize::new(0);
        let mut done: Vec<(usize, Result<T, E>)> = std::thread::scope(|scope| {
            let workers: Vec<_> = self
                .narrow
                .iter()
                .take(chunks.len())
                .map(|pool| {
                    let (next, work) = (&next, &work);
                    scope.spawn(move || {
                        pool.install(|| {
                            let mut mine = Vec::new();
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                let Some(chunk) = chunks.get(i) else { break };
                                mine.push((i, work(chunk)));
                            }
                            mine
                        })
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().expect("a stream panicked")).collect()
        });
        done.sort_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, r)| r).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_chunk_order() {
        let streams = Streams::new(3);
        let chunks: Vec<Vec<usize>> = (0..10).map(|i| vec![i, i + 100]).collect();
        let sums: Vec<usize> = streams.run(&chunks, |c| Ok::<_, ()>(c.iter().sum())).unwrap();
        assert_eq!(sums, (0..10).map(|i| 2 * i + 100).collect::<Vec<_>>());
        let one: Vec<usize> = streams.run(&chunks[..1], |c| Ok::<_, ()>(c.len())).unwrap();
        assert_eq!(one, [2]);
        let failed = streams.run(&chunks, |c| if c[0] == 5 { Err("five") } else { Ok(0) });
        assert_eq!(failed, Err("five"));
    }
}
