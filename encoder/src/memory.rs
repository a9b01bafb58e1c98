//! How much memory this process may still take: what Linux says is available
//! (`MemAvailable`: free memory and the page cache it can drop), bounded by the headroom under
//! the memory limit of the process's control group (cgroup v2) and of each group above it, as
//! a container runtime or systemd sets one. Read when an encode starts, to size how far a lead
//! may run ahead of the larger rungs in memory ([`crate::ladder::auto_lead_buffer_mib`]).

use std::path::Path;

/// Bytes this process may still take, if the system says.
pub fn available() -> Option<u64> {
    let read = |path: &Path| std::fs::read_to_string(path).ok();
    let system = read(Path::new("/proc/meminfo")).and_then(|text| mem_available(&text));
    let group = read(Path::new("/proc/self/cgroup"))
        .and_then(|text| cgroup_path(&text).map(str::to_owned))
        .and_then(|path| cgroup_headroom(&path, |file| read(&Path::new("/sys/fs/cgroup").join(file))));
    match (system, group) {
        (Some(system), Some(group)) => Some(system.min(group)),
        (system, group) => system.or(group),
    }
}

/// `MemAvailable` of `/proc/meminfo`, in bytes.
fn mem_available(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let kib = line.strip_prefix("MemAvailable:")?.trim().strip_suffix("kB")?.trim();
        kib.parse::<u64>().ok()?.checked_mul(1024)
    })
}

/// The process's cgroup v2 path (relative to `/sys/fs/cgroup`) from `/proc/self/cgroup`: its
/// `0::/path` line.
fn cgroup_path(cgroup: &str) -> Option<&str> {
    cgroup
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| path.trim().trim_start_matches('/'))
}

/// The least headroom (`memory.max` less `memory.current`) of the group at `path` and of every
/// group above it that has a limit; `None` if none has one. `read` gives a file's contents by
/// its path relative to the cgroup root.
fn cgroup_headroom(path: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    let mut groups = vec![String::new()];
    let mut at = String::new();
    for part in path.split('/').filter(|part| !part.is_empty()) {
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(part);
        groups.push(at.clone());
    }
    groups
        .iter()
        .filter_map(|group| {
            let file = |name: &str| {
                read(&if group.is_empty() {
                    name.to_owned()
                } else {
                    format!("{group}/{name}")
                })
            };
            let max = file("memory.max")?.trim().parse::<u64>().ok()?;
            let current = file("memory.current")
                .and_then(|c| c.trim().parse::<u64>().ok())
                .unwrap_or(0);
            Some(max.saturating_sub(current))
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn mem_available_is_read_in_bytes_from_meminfo() {
        let meminfo = "MemTotal:       24000000 kB\nMemFree:         1000000 kB\nMemAvailable:   22000000 kB\n";
        assert_eq!(mem_available(meminfo), Some(22_000_000 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);
        assert_eq!(mem_available("MemAvailable: lots kB\n"), None);
    }

    #[test]
    fn the_cgroup_path_is_the_v2_line() {
        assert_eq!(
            cgroup_path("0::/system.slice/vodsource.service\n"),
            Some("system.slice/vodsource.service")
        );
        assert_eq!(cgroup_path("0::/\n"), Some(""));
        // cgroup v1 only: no unified line.
        assert_eq!(cgroup_path("4:memory:/docker/abc\n1:name=systemd:/\n"), None);
    }

    #[test]
    fn the_headroom_is_the_least_under_any_limit_on_the_way_up() {
        let files: HashMap<&str, &str> = [
            ("memory.max", "max\n"),
            ("kubepods/memory.max", "8589934592\n"),
            ("kubepods/memory.current", "6442450944\n"),
            ("kubepods/pod1/memory.max", "4294967296\n"),
            ("kubepods/pod1/memory.current", "1073741824\n"),
            ("kubepods/pod1/app/memory.max", "max\n"),
            ("kubepods/pod1/app/memory.current", "1073741824\n"),
        ]
        .into_iter()
        .collect();
        let read = |file: &str| files.get(file).map(|s| (*s).to_owned());
        // The pod allows 3 GiB more, but the group above it only 2 GiB.
        assert_eq!(cgroup_headroom("kubepods/pod1/app", read), Some(2 << 30));
        assert_eq!(cgroup_headroom("kubepods/pod1", read), Some(2 << 30));
        // No limit anywhere on the way up.
        assert_eq!(cgroup_headroom("", read), None);
        assert_eq!(cgroup_headroom("elsewhere", read), None);
        // Over its limit (the kernel is reclaiming): no headroom, not an underflow.
        let over = |file: &str| match file {
            "memory.max" => Some("100".to_owned()),
            "memory.current" => Some("200".to_owned()),
            _ => None,
        };
        assert_eq!(cgroup_headroom("", over), Some(0));
    }

    #[test]
    fn this_machine_says_how_much_is_available() {
        let bytes = available().expect("Linux says how much memory is available");
        assert!(bytes > 0);
    }
}
