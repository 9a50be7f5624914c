//! Background work at a lower CPU priority than the validations.
//!
//! The writer of acceptances is serial: every request waits for its batch,
//! and the next batch for the one before. On a machine with few cores, a
//! background thread that runs beside it at the same priority (the audit
//! index's merges of runs, which can take a core for seconds) takes time slices
//! the writer and the runtime would have used, and the whole pipeline waits.
//! The scheduler gives a thread at nice 19 about 1/70 of the share of one
//! at nice 0 when they compete, and all of the time no one else wants: the
//! merges then run in the gaps the pipeline leaves (the machine stays some
//! 15–20% idle under a full bench), and under a load that leaves no gap
//! they fall behind, which costs look-ups more runs to seek and nothing
//! else (see docs/decisions.md). Filing itself stays at the normal
//! priority: it reads the store's file, and a starved read would hold back
//! the checkpoints (see `auditindex::file_all`). The WAL checkpoints run in
//! between, at [`CHECKPOINT_NICE`]: with a million tokens in use they take
//! 7–9% of a core, and at the normal priority each of their time slices
//! was taken from the writer's; at the lowest they fell behind on a
//! machine with no idle time, and the WAL grew (see `checkpoint`).
//!
//! SQLite's connections run on threads of their own (one per `sqlx`
//! connection), so a connection's thread is given a name of its own
//! ([`SqliteConnectOptions::thread_name`](sqlx::sqlite::SqliteConnectOptions::thread_name))
//! and found by it. Lowering one's own priority needs no privilege. On
//! systems other than Linux (no per-thread priority there) it does nothing.

/// The audit filer's connection thread (at most 15 bytes: the kernel's
/// limit for a thread's name).
pub(super) const FILER_THREAD: &str = "ichido-filer";
/// The audit index merger's connection thread.
pub(super) const MERGER_THREAD: &str = "ichido-merger";
/// The WAL checkpoints' connection thread.
pub(super) const CHECKPOINT_THREAD: &str = "ichido-ckpt";
/// The merger's nice value: the lowest priority.
pub(super) const MERGER_NICE: i32 = 19;
/// The checkpoints' nice value: below the validations, not the lowest. A
/// thread at nice 10 gets about a ninth of the share of one at nice 0 when
/// they compete (at 19, about a seventieth): the checkpoints yield the
/// CPU to the writer and the runtime, and still keep up on a machine left
/// no idle time (at 19 they fell behind there: docs/performance.md,
/// "Sixteenth machine").
pub(super) const CHECKPOINT_NICE: i32 = 10;

/// The thread IDs and `/proc` directories of this process's threads named
/// `name`.
#[cfg(target_os = "linux")]
fn threads_named(name: &str) -> std::io::Result<Vec<(i32, std::path::PathBuf)>> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")? {
        let task = task?;
        // A thread that has just ended has no `comm` any more.
        let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else {
            continue;
        };
        if comm.trim_end() != name {
            continue;
        }
        if let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) {
            found.push((tid, task.path()));
        }
    }
    Ok(found)
}

/// Lowers every thread of this process named `name` to the nice value
/// `nice`, never raising one that already runs lower (a service started
/// at nice 15 keeps 15 there: raising a priority is not ours to do, and
/// needs a privilege); returns how many threads there were.
#[cfg(target_os = "linux")]
pub(super) fn lower(name: &str, nice: i32) -> std::io::Result<usize> {
    let mut lowered = 0;
    for (tid, _) in threads_named(name)? {
        if let Some(tid) = rustix::process::Pid::from_raw(tid) {
            // On Linux a thread ID given as the process gets or sets that
            // thread's priority alone (setpriority(2), NOTES).
            let now = rustix::process::getpriority_process(Some(tid))?;
            if nice > now {
                rustix::process::setpriority_process(Some(tid), nice)?;
            }
            lowered += 1;
        }
    }
    Ok(lowered)
}

/// [`lower`], for a connection's `after_connect` hook: how it went is
/// logged (a priority that could not be lowered is a warning, not an
/// error: the connection works as before).
pub(super) fn lower_or_warn(name: &str, nice: i32) {
    match lower(name, nice) {
        Ok(threads) => tracing::debug!(thread = name, nice, threads, "CPU priority lowered"),
        Err(e) => {
            tracing::warn!(thread = name, nice, error = %e, "the CPU priority could not be lowered");
        }
    }
}

/// Sets the nice value of every thread of this process named `name`: not
/// on this system.
#[cfg(not(target_os = "linux"))]
pub(super) fn lower(_name: &str, _nice: i32) -> std::io::Result<usize> {
    Ok(0)
}

/// The nice values of this process's threads named `name` (tests).
#[cfg(all(test, target_os = "linux"))]
pub(super) fn nice_of(name: &str) -> Vec<i32> {
    threads_named(name)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(_, dir)| std::fs::read_to_string(dir.join("stat")).ok())
        .filter_map(|stat| nice_in(&stat))
        .collect()
}

/// The nice value in a `/proc/…/stat` line: the 19th field, the 17th
/// after the name (which is in parentheses and may hold spaces).
#[cfg(all(test, target_os = "linux"))]
pub(super) fn nice_in(stat: &str) -> Option<i32> {
    let after = stat.get(stat.rfind(')')? + 2..)?;
    after.split(' ').nth(16)?.parse().ok()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{lower, nice_in, nice_of};

    /// The nice value of this process's main thread.
    fn process_nice() -> i32 {
        nice_in(&std::fs::read_to_string("/proc/self/stat").unwrap()).unwrap()
    }

    /// A thread found by its name gets the nice value, and no other does;
    /// a thread already lower keeps its own.
    #[test]
    fn a_named_thread_is_lowered_and_no_other() {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("ichido-test-lo".into())
            .spawn(move || {
                ready_tx.send(()).unwrap();
                done_rx.recv().unwrap();
            })
            .unwrap();
        ready_rx.recv().unwrap();
        let before = process_nice();
        assert_eq!(nice_of("ichido-test-lo"), vec![before]);
        assert_eq!(lower("ichido-test-lo", 15).unwrap(), 1);
        assert_eq!(nice_of("ichido-test-lo"), vec![15]);
        assert_eq!(process_nice(), before);
        assert_eq!(lower("no-such-thread", 15).unwrap(), 0);
        // A thread already lower keeps its priority: nothing is raised.
        assert_eq!(lower("ichido-test-lo", 5).unwrap(), 1);
        assert_eq!(nice_of("ichido-test-lo"), vec![15]);
        done_tx.send(()).unwrap();
        thread.join().unwrap();
    }

    /// A name in parentheses with spaces does not shift the fields.
    #[test]
    fn the_nice_value_is_read_after_the_name() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194304 100 0 0 0 5 6 0 0 20 19 3 0 100 0";
        assert_eq!(nice_in(stat), Some(19));
    }
}
