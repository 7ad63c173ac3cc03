//! The declarations, one line each (kept so: rustfmt skips this file).

use super::{counter, gauge, histogram, Desc, CADVISOR, HOST, IDENTITY};

// kata-monitor's own families: its names, HELP texts (typos included) and types.

pub const KATA_MONITOR_RUNNING_SHIM_COUNT: Desc = gauge("kata_monitor_running_shim_count", "Running shim count(running sandboxes).", &[]);
pub const KATA_MONITOR_SCRAPE_COUNT: Desc = counter("kata_monitor_scrape_count", "Scape count.", &[]);
pub const KATA_MONITOR_SCRAPE_FAILED_COUNT: Desc = counter("kata_monitor_scrape_failed_count", "Failed scape count.", &[]);
pub const KATA_MONITOR_SCRAPE_DURATIONS_HISTOGRAM_MILLISECONDS: Desc = histogram("kata_monitor_scrape_durations_histogram_milliseconds", "Time used to scrape from shims", &[]);
pub const KATA_MONITOR_PROCESS_CPU_SECONDS_TOTAL: Desc = counter("kata_monitor_process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", &[]);
pub const KATA_MONITOR_PROCESS_RESIDENT_MEMORY_BYTES: Desc = gauge("kata_monitor_process_resident_memory_bytes", "Resident memory size in bytes.", &[]);
pub const KATA_MONITOR_PROCESS_VIRTUAL_MEMORY_BYTES: Desc = gauge("kata_monitor_process_virtual_memory_bytes", "Virtual memory size in bytes.", &[]);
pub const KATA_MONITOR_PROCESS_START_TIME_SECONDS: Desc = gauge("kata_monitor_process_start_time_seconds", "Start time of the process since unix epoch in seconds.", &[]);
pub const KATA_MONITOR_PROCESS_OPEN_FDS: Desc = gauge("kata_monitor_process_open_fds", "Number of open file descriptors.", &[]);
pub const KATA_MONITOR_PROCESS_MAX_FDS: Desc = gauge("kata_monitor_process_max_fds", "Maximum number of open file descriptors.", &[]);

// Per sandbox.

pub const KATA_PULSE_SHIM_UP: Desc = gauge("kata_pulse_shim_up", "1 if the last scrape of this sandbox's shim succeeded, else 0.", IDENTITY);
pub const KATA_PULSE_SHIM_SCRAPE_DURATION_SECONDS: Desc = gauge("kata_pulse_shim_scrape_duration_seconds", "Duration of the last scrape of this sandbox's shim.", IDENTITY);
pub const KATA_PULSE_SHIM_SAMPLES: Desc = gauge("kata_pulse_shim_samples", "Samples the last successful scrape of this shim produced.", IDENTITY);
pub const KATA_PULSE_SHIM_SCRAPES_TOTAL: Desc = counter("kata_pulse_shim_scrapes_total", "Scrapes of this sandbox's shim (results reused within the metrics interval are not counted).", IDENTITY);
pub const KATA_PULSE_SHIM_SCRAPE_FAILURES_TOTAL: Desc = counter("kata_pulse_shim_scrape_failures_total", "Failed scrapes of this sandbox's shim (connect, timeout, HTTP status, body size, unparseable body).", IDENTITY);
pub const KATA_PULSE_SHIM_MALFORMED_LINES_TOTAL: Desc = counter("kata_pulse_shim_malformed_lines_total", "Lines of this shim's metrics that were skipped as malformed.", IDENTITY);
pub const KATA_PULSE_SANDBOX_INFO: Desc = gauge("kata_pulse_sandbox_info", "One series per discovered sandbox, with its runtime and what CRI reports about its pod.", &["sandbox_id", "cri_uid", "cri_name", "cri_namespace", "runtime", "runtime_handler", "cri_metadata"]);

// Agent-wide.

pub const KATA_PULSE_BUILD_INFO: Desc = gauge("kata_pulse_build_info", "Build of the running agent; the value is always 1.", &["version"]);
pub const KATA_PULSE_SANDBOXES: Desc = gauge("kata_pulse_sandboxes", "Discovered sandboxes by runtime.", &["runtime"]);
pub const KATA_PULSE_SANDBOXES_WITHOUT_CRI_METADATA: Desc = gauge("kata_pulse_sandboxes_without_cri_metadata", "Discovered sandboxes that CRI has not described (yet).", &[]);
pub const KATA_PULSE_DISCOVERY_EVENTS_TOTAL: Desc = counter("kata_pulse_discovery_events_total", "Sandboxes added and removed by discovery.", &["event"]);
pub const KATA_PULSE_DISCOVERY_RESCANS_TOTAL: Desc = counter("kata_pulse_discovery_rescans_total", "Full rescans of the sandbox folders (periodic or after lost inotify events).", &[]);
pub const KATA_PULSE_DISCOVERY_WATCH_ERRORS_TOTAL: Desc = counter("kata_pulse_discovery_watch_errors_total", "Folders that could not be watched with inotify (rescans cover them).", &[]);
pub const KATA_PULSE_DISCOVERY_REFUSED_TOTAL: Desc = counter("kata_pulse_discovery_refused_total", "Sandbox folders or shim sockets not connected to: a symlink, a socket with more than one hard link, or not a socket (each counted once while it stays so).", &["reason"]);
pub const KATA_PULSE_DISCOVERY_REFUSED: Desc = gauge("kata_pulse_discovery_refused", "Sandbox folders or shim sockets refused now, by reason (they are not connected to while they stay so).", &["reason"]);
pub const KATA_PULSE_PANICS_TOTAL: Desc = counter("kata_pulse_panics_total", "Panics in the agent's threads and tasks (each logged as an error; none is expected).", &[]);
pub const KATA_PULSE_TASK_RESTARTS_TOTAL: Desc = counter("kata_pulse_task_restarts_total", "Restarts of a background task that stopped (discovery, the CRI labeller).", &["task"]);
pub const KATA_PULSE_LOG_WRITE_ERRORS_TOTAL: Desc = counter("kata_pulse_log_write_errors_total", "Log lines that could not be written (stderr closed, disk full) and were dropped.", &[]);
pub const KATA_PULSE_LOG_LINES_DROPPED_TOTAL: Desc = counter("kata_pulse_log_lines_dropped_total", "Log lines dropped unwritten because the reader of stderr fell behind (1024 lines or 1 MiB queued); the agent never waits for its log.", &[]);
pub const KATA_PULSE_CRI_UP: Desc = gauge("kata_pulse_cri_up", "1 if the last CRI call succeeded, else 0.", &[]);
pub const KATA_PULSE_CRI_REQUESTS_TOTAL: Desc = counter("kata_pulse_cri_requests_total", "CRI calls by result (pod listings, and container listings for the cAdvisor view).", &["result"]);
pub const KATA_PULSE_CRI_LAST_SUCCESS_TIMESTAMP_SECONDS: Desc = gauge("kata_pulse_cri_last_success_timestamp_seconds", "Unix time of the last successful CRI call.", &[]);
pub const KATA_PULSE_TYPE_CONFLICTS_TOTAL: Desc = counter("kata_pulse_type_conflicts_total", "Shim families dropped from a response because another shim reported the family with another type.", &[]);
pub const KATA_PULSE_TYPE_CONFLICT_SAMPLES_TOTAL: Desc = counter("kata_pulse_type_conflict_samples_total", "Samples lost with those families.", &[]);
pub const KATA_PULSE_SHIM_RESERVED_FAMILIES_TOTAL: Desc = counter("kata_pulse_shim_reserved_families_total", "Shim families refused because they used the agent's own kata_monitor_, kata_pulse_ or container_ prefixes.", &[]);
pub const KATA_PULSE_SHIM_COLLIDING_FAMILIES_TOTAL: Desc = counter("kata_pulse_shim_colliding_families_total", "Shim families dropped because another family of the same shim had the same name after kata-monitor's renaming (go_x beside kata_shim_go_x).", &[]);
pub const KATA_PULSE_SHIM_LABEL_LIMIT_SAMPLES_TOTAL: Desc = counter("kata_pulse_shim_label_limit_samples_total", "Shim samples dropped because the four identity labels would have taken them over the 64 labels a sample may carry.", &[]);
pub const KATA_PULSE_SCRAPE_CACHE_BYTES: Desc = gauge("kata_pulse_scrape_cache_bytes", "Memory held by cached, relabelled shim metrics.", &[]);
pub const KATA_PULSE_HEAP_BYTES: Desc = gauge("kata_pulse_heap_bytes", "The agent's heap (jemalloc): bytes allocated (state=\"in_use\"), and bytes the allocator keeps resident for them (state=\"resident\": their pages with the free space between, freed pages not handed back yet, and its metadata); sampled every 5 s.", &["state"]);

pub const KATA_PULSE_CONTAINER_SNAPSHOT_AGE_SECONDS: Desc = gauge("kata_pulse_container_snapshot_age_seconds", "Age of the container listing (CRI, containerd task metrics) the container_* series of this response come from; above the metrics interval when the runtime was slow or hung and the last listing was served.", &[]);
pub const KATA_PULSE_CONTAINERD_METRICS_ERRORS_TOTAL: Desc = counter("kata_pulse_containerd_metrics_errors_total", "containerd task metrics that could not be used: whole calls (reason=\"call\") and single containers' payloads (reason=\"payload\").", &["reason"]);

// The cAdvisor view (views::cadvisor): the kubelet's names, HELP texts and types.

pub const CONTAINER_CPU_USAGE_SECONDS_TOTAL: Desc = counter("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", &["container", "cpu", "id", "image", "name", "namespace", "pod"]);
pub const CONTAINER_CPU_USER_SECONDS_TOTAL: Desc = counter("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", CADVISOR);
pub const CONTAINER_CPU_SYSTEM_SECONDS_TOTAL: Desc = counter("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", CADVISOR);
pub const CONTAINER_CPU_CFS_PERIODS_TOTAL: Desc = counter("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", CADVISOR);
pub const CONTAINER_CPU_CFS_THROTTLED_PERIODS_TOTAL: Desc = counter("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", CADVISOR);
pub const CONTAINER_CPU_CFS_THROTTLED_SECONDS_TOTAL: Desc = counter("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", CADVISOR);
pub const CONTAINER_MEMORY_USAGE_BYTES: Desc = gauge("container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed", CADVISOR);
pub const CONTAINER_MEMORY_WORKING_SET_BYTES: Desc = gauge("container_memory_working_set_bytes", "Current working set in bytes.", CADVISOR);
pub const CONTAINER_MEMORY_RSS: Desc = gauge("container_memory_rss", "Size of RSS in bytes.", CADVISOR);
pub const CONTAINER_MEMORY_CACHE: Desc = gauge("container_memory_cache", "Number of bytes of page cache memory.", CADVISOR);
pub const CONTAINER_MEMORY_SWAP: Desc = gauge("container_memory_swap", "Container swap usage in bytes.", CADVISOR);
pub const CONTAINER_MEMORY_MAPPED_FILE: Desc = gauge("container_memory_mapped_file", "Size of memory mapped files in bytes.", CADVISOR);
pub const CONTAINER_MEMORY_MAX_USAGE_BYTES: Desc = gauge("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", CADVISOR);
pub const CONTAINER_MEMORY_FAILCNT: Desc = counter("container_memory_failcnt", "Number of memory usage hits limits", CADVISOR);
pub const CONTAINER_OOM_EVENTS_TOTAL: Desc = counter("container_oom_events_total", "Count of out of memory events observed for the container", CADVISOR);
pub const CONTAINER_SPEC_MEMORY_LIMIT_BYTES: Desc = gauge("container_spec_memory_limit_bytes", "Memory limit for the container.", CADVISOR);
pub const CONTAINER_SPEC_MEMORY_RESERVATION_LIMIT_BYTES: Desc = gauge("container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container.", CADVISOR);
pub const CONTAINER_SPEC_MEMORY_SWAP_LIMIT_BYTES: Desc = gauge("container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", CADVISOR);
pub const CONTAINER_SPEC_CPU_QUOTA: Desc = gauge("container_spec_cpu_quota", "CPU quota of the container.", CADVISOR);
pub const CONTAINER_SPEC_CPU_PERIOD: Desc = gauge("container_spec_cpu_period", "CPU period of the container.", CADVISOR);
pub const CONTAINER_SPEC_CPU_SHARES: Desc = gauge("container_spec_cpu_shares", "CPU share of the container.", CADVISOR);
pub const CONTAINER_START_TIME_SECONDS: Desc = gauge("container_start_time_seconds", "Start time of the container since unix epoch in seconds.", CADVISOR);
pub const CONTAINER_LAST_SEEN: Desc = gauge("container_last_seen", "Last time a container was seen by the exporter", CADVISOR);
pub const CONTAINER_THREADS: Desc = gauge("container_threads", "Number of threads running inside the container", CADVISOR);
pub const CONTAINER_THREADS_MAX: Desc = gauge("container_threads_max", "Maximum number of threads allowed inside the container, infinity if value is zero", CADVISOR);
pub const CONTAINER_NETWORK_RECEIVE_BYTES_TOTAL: Desc = counter("container_network_receive_bytes_total", "Cumulative count of bytes received", &["container", "id", "image", "interface", "name", "namespace", "pod"]);
pub const CONTAINER_NETWORK_RECEIVE_PACKETS_TOTAL: Desc = counter("container_network_receive_packets_total", "Cumulative count of packets received", &["container", "id", "image", "interface", "name", "namespace", "pod"]);
pub const CONTAINER_NETWORK_RECEIVE_ERRORS_TOTAL: Desc = counter("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving", &["container", "id", "image", "interface", "name", "namespace", "pod"]);
pub const CONTAINER_NETWORK_RECEIVE_PACKETS_DROPPED_TOTAL: Desc = counter("container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving", &["container", "id", "image", "interface", "name", "namespace", "pod"]);
pub const CONTAINER_NETWORK_TRANSMIT_BYTES_TOTAL: Desc = counter("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted", &["container", "id", "image", "interface", "name", "namespace", "pod"]);
pub const CONTAINER_NETWORK_TRANSMIT_PACKETS_TOTAL: Desc = counter("container_network_transmit_packets_total", "Cumulative count of packets transmitted", &["container", "id", "image", "interface", "name", "namespace", "pod"]);
pub const CONTAINER_NETWORK_TRANSMIT_ERRORS_TOTAL: Desc = counter("container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting", &["container", "id", "image", "interface", "name", "namespace", "pod"]);
pub const CONTAINER_NETWORK_TRANSMIT_PACKETS_DROPPED_TOTAL: Desc = counter("container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting", &["container", "id", "image", "interface", "name", "namespace", "pod"]);
pub const CONTAINER_FS_READS_BYTES_TOTAL: Desc = counter("container_fs_reads_bytes_total", "Cumulative count of bytes read", &["container", "device", "id", "image", "name", "namespace", "pod"]);
pub const CONTAINER_FS_WRITES_BYTES_TOTAL: Desc = counter("container_fs_writes_bytes_total", "Cumulative count of bytes written", &["container", "device", "id", "image", "name", "namespace", "pod"]);
pub const CONTAINER_FS_READS_TOTAL: Desc = counter("container_fs_reads_total", "Cumulative count of reads completed", &["container", "device", "id", "image", "name", "namespace", "pod"]);
pub const CONTAINER_FS_WRITES_TOTAL: Desc = counter("container_fs_writes_total", "Cumulative count of writes completed", &["container", "device", "id", "image", "name", "namespace", "pod"]);
pub const CONTAINER_BLKIO_DEVICE_USAGE_TOTAL: Desc = counter("container_blkio_device_usage_total", "Blkio Device bytes usage", &["container", "device", "id", "image", "major", "minor", "name", "namespace", "operation", "pod"]);

// The host-cost view (views::host).

pub const KATA_PULSE_POD_HOST_CPU_SECONDS_TOTAL: Desc = counter("kata_pulse_pod_host_cpu_seconds_total", "CPU time (user + system) of the pod's host processes: the shim, the hypervisor (its vCPU threads included) and virtiofsd.", HOST);
pub const KATA_PULSE_POD_HOST_MEMORY_RSS_BYTES: Desc = gauge("kata_pulse_pod_host_memory_rss_bytes", "Resident memory of the pod's host processes; the hypervisor's includes the guest memory it has touched.", HOST);
pub const KATA_PULSE_POD_HOST_THREADS: Desc = gauge("kata_pulse_pod_host_threads", "Threads of the pod's host processes.", HOST);
pub const KATA_PULSE_POD_HOST_OPEN_FDS: Desc = gauge("kata_pulse_pod_host_open_fds", "Open file descriptors of the pod's host processes.", HOST);
