//! Pause points for the crash tests (`tests/it/crash.rs`), in debug builds only.
//!
//! The brief keeps fault injection in the fake Kubernetes API, never in the code under
//! test. A crash test is the exception: to prove that its SIGKILL landed inside the
//! window it is about (a cache member half written, a ticket made but its token not yet
//! handed out), the daemon itself must stop there, since no outside observer can hold
//! it at that instant. So: with `JOINERY_TEST_PAUSE=POINT:FILE` in its environment, the
//! thread reaching `POINT` writes `FILE` and waits there until the process is killed.
//! Release builds (and so every shipped binary) compile [`point`] to nothing and never
//! read the variable. docs/testing.md lists the points.

/// Where a crash test may hold the daemon; see the module header.
#[cfg(debug_assertions)]
pub(crate) fn point(name: &str) {
    let Ok(spec) = std::env::var("JOINERY_TEST_PAUSE") else {
        return;
    };
    let Some((point, file)) = spec.split_once(':') else {
        return;
    };
    if point == name && std::fs::write(file, name).is_ok() {
        // Held here for good: the test kills the process.
        loop {
            std::thread::park();
        }
    }
}

/// Release builds: no pause points.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub(crate) fn point(_name: &str) {}
