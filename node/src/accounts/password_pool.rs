//! Password hashing is the most expensive thing a client can ask of a hearth: argon2id takes
//! ~19 MiB and tens of milliseconds per attempt. It runs on a fixed set of worker threads (one
//! per core but one, by default), each reusing one memory buffer, behind a bounded queue with a deadline.
//! A login flood waits its turn or is told to retry later; it cannot exhaust memory (the workers
//! hold `workers × m_cost` at most, whatever the load) or take every core from other work.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use zeroize::Zeroizing;

/// Why a password could not be hashed or checked.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("too many password checks are waiting; retry in {retry_after_ms} ms")]
    Busy { retry_after_ms: u64 },
    #[error("invalid argon2 parameters: {0}")]
    Params(#[source] argon2::password_hash::Error),
    #[error("password hashing failed: {0}")]
    Hash(#[source] argon2::password_hash::Error),
}

/// How many workers, how much waiting.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    pub workers: usize,
    /// Jobs that may wait for a worker; more are refused at once.
    pub queue: usize,
    /// A job that waited longer than this is refused instead of run (its client has likely
    /// given up, and running it would only delay the ones behind it).
    pub max_wait: Duration,
}

impl PoolConfig {
    /// One worker per core but one (at least one), so a flood of logins always leaves a core
    /// for messages; a queue of 64 per worker.
    pub fn for_this_machine(max_wait: Duration) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers = cores.saturating_sub(1).max(1);
        Self {
            workers,
            queue: workers * 64,
            max_wait,
        }
    }
}

/// A job for a worker: it runs with the worker's memory, or, when it waited too long, with the
/// `Busy` error to answer instead.
type Work = Box<dyn FnOnce(Result<&mut Vec<Block>, PoolError>) + Send>;

struct Job {
    queued: Instant,
    work: Work,
}

/// The workers and their queue. Dropping it lets the workers finish and exit.
pub struct PasswordPool {
    queue: SyncSender<Job>,
    max_wait: Duration,
}

impl PasswordPool {
    pub fn start(config: PoolConfig) -> Self {
        let (queue, jobs) = mpsc::sync_channel(config.queue.max(1));
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..config.workers.max(1) {
            let jobs = jobs.clone();
            let max_wait = config.max_wait;
            std::thread::Builder::new()
                .name(format!("hearth-argon2-{i}"))
                .spawn(move || work(&jobs, max_wait))
                .expect("spawn a password worker");
        }
        Self {
            queue,
            max_wait: config.max_wait,
        }
    }

    /// A new argon2id hash of `password` (a PHC string). Blocks until a worker has done it.
    pub fn hash(&self, params: Params, password: &str) -> Result<String, PoolError> {
        let password = Zeroizing::new(password.to_owned());
        self.run(move |memory| hash_with(memory, params, &password))
    }

    /// Whether `password` matches `hash` (with the parameters stored in the hash). Blocks until a
    /// worker has checked it.
    pub fn verify(&self, hash: &str, password: &str) -> Result<bool, PoolError> {
        let (hash, password) = (hash.to_owned(), Zeroizing::new(password.to_owned()));
        self.run(move |memory| Ok(verify_with(memory, &hash, &password)))
    }

    /// Queues `f` for a worker and waits for its answer.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<Block>) -> Result<T, PoolError> + Send + 'static,
    ) -> Result<T, PoolError> {
        let (reply, answer) = mpsc::channel();
        let job = Job {
            queued: Instant::now(),
            work: Box::new(move |memory| {
                let _ = reply.send(memory.and_then(f));
            }),
        };
        self.queue.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) | TrySendError::Disconnected(_) => self.busy(),
        })?;
        answer.recv().unwrap_or_else(|_| Err(self.busy()))
    }

    fn busy(&self) -> PoolError {
        busy(self.max_wait)
    }
}

fn busy(max_wait: Duration) -> PoolError {
    PoolError::Busy {
        retry_after_ms: max_wait.as_millis() as u64,
    }
}

fn work(jobs: &Mutex<Receiver<Job>>, max_wait: Duration) {
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = match jobs.lock() {
            Ok(jobs) => jobs.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        if job.queued.elapsed() > max_wait {
            (job.work)(Err(busy(max_wait)));
        } else {
            (job.work)(Ok(&mut memory));
        }
    }
}

/// The worker's buffer, grown (never shrunk) to what `params` needs.
fn blocks_for<'m>(memory: &'m mut Vec<Block>, params: &Params) -> &'m mut [Block] {
    let needed = params.block_count();
    if memory.len() < needed {
        memory.resize(needed, Block::default());
    }
    &mut memory[..needed]
}

/// The same PHC string `argon2`'s `PasswordHasher` makes, computed in `memory`.
pub(crate) fn hash_with(
    memory: &mut Vec<Block>,
    params: Params,
    password: &str,
) -> Result<String, PoolError> {
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt
        .as_salt()
        .decode_b64(&mut salt_bytes)
        .map_err(PoolError::Hash)?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let output_len = params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let blocks = blocks_for(memory, &params);
    let output = Output::init_with(output_len, |out| {
        argon
            .hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, &mut *blocks)
            .map_err(|_| argon2::password_hash::Error::Crypto)
    })
    .map_err(PoolError::Hash)?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(PoolError::Params)?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Checks `password` against a PHC string with the parameters it names, in `memory`.
pub(crate) fn verify_with(memory: &mut Vec<Block>, hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params), Some(salt), Some(expected)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
        parsed.salt,
        parsed.hash,
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let argon = Argon2::new(algorithm, version, params.clone());
    let blocks = blocks_for(memory, &params);
    let mut out = Zeroizing::new(vec![0u8; expected.len()]);
    if argon
        .hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, blocks)
        .is_err()
    {
        return false;
    }
    // `Output`'s comparison is constant-time.
    Output::new(&out).is_ok_and(|computed| computed == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    fn params() -> Params {
        Params::new(64, 1, 1, None).unwrap()
    }

    #[test]
    fn hashes_are_the_standard_phc_strings_both_ways() {
        let mut memory = Vec::new();
        let ours = hash_with(&mut memory, params(), "correct horse").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"wrong horse", &parsed)
                .is_err()
        );
        // Hashes stored before the pool existed still verify.
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        assert!(verify_with(&mut memory, &theirs, "battery staple"));
        assert!(!verify_with(&mut memory, &theirs, "battery stapler"));
        assert!(!verify_with(&mut memory, "not a hash", "x"));
        assert!(!verify_with(
            &mut memory,
            "$argon2id$v=19$m=64,t=1,p=1$",
            "x"
        ));
    }

    #[test]
    fn a_full_queue_and_a_stale_job_are_refused_as_busy() {
        let pool = PasswordPool::start(PoolConfig {
            workers: 1,
            queue: 1,
            max_wait: Duration::from_millis(0),
        });
        // With no time allowed to wait, every job is stale by the time a worker takes it.
        assert_eq!(
            pool.hash(params(), "correct horse"),
            Err(PoolError::Busy { retry_after_ms: 0 })
        );
        let pool = PasswordPool::start(PoolConfig {
            workers: 1,
            queue: 4,
            max_wait: Duration::from_secs(60),
        });
        let hash = pool.hash(params(), "correct horse").unwrap();
        assert_eq!(pool.verify(&hash, "correct horse"), Ok(true));
        assert_eq!(pool.verify(&hash, "wrong"), Ok(false));
    }
}
