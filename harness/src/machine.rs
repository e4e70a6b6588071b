//! What results.json says about the machine, and the process's resident memory.

use reports::Machine;

/// CPU model, cores available to this process, OS and kernel, rustc that built us.
pub fn describe() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| format!(" {}", s.trim()))
        .unwrap_or_default();
    Machine {
        cpu,
        cores: available_cores() as u32,
        os: format!("{}{kernel}", std::env::consts::OS),
        rustc: env!("POOLBENCH_RUSTC_VERSION").to_owned(),
        gpu: None,
    }
}

/// Cores this process may run on.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Resident set size of this process in bytes (`/proc/self/statm`), where available.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident_pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: `sysconf` has no preconditions.
    let page_bytes = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(resident_pages * u64::try_from(page_bytes).ok()?)
}

/// Tests that read process-wide memory figures (RSS, mimalloc's commit) hold this, so
/// that another such test freeing memory meanwhile cannot skew them.
#[cfg(test)]
pub(crate) static MEMORY_TEST_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
