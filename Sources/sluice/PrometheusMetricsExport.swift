import CoreMetrics
import Prometheus
import SluiceProxy

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// swift-metrics' Prometheus backend for `sluice run` with an admin
/// listener, and the process metrics Prometheus clients conventionally
/// export (swift-prometheus offers none): CPU seconds, resident and virtual
/// memory, open and maximum descriptors, start time. The process figures
/// are read from /proc when `/metrics` is scraped, never on the relay path.
final class PrometheusMetricsExport: Sendable {
    let registry: PrometheusCollectorRegistry
    private let cpuSeconds: Prometheus.Gauge
    private let residentBytes: Prometheus.Gauge
    private let virtualBytes: Prometheus.Gauge
    private let openDescriptors: Prometheus.Gauge
    private let maxDescriptors: Prometheus.Gauge

    private init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        // A gauge set to the kernel's figure (a counter would need the delta).
        cpuSeconds = registry.makeGauge(descriptor: MetricNameDescriptor(metricName: "process_cpu_seconds_total", unitName: "", helpText: "User and system CPU time spent, in seconds."))
        residentBytes = registry.makeGauge(descriptor: MetricNameDescriptor(metricName: "process_resident_memory_bytes", unitName: "", helpText: "Resident memory size in bytes."))
        virtualBytes = registry.makeGauge(descriptor: MetricNameDescriptor(metricName: "process_virtual_memory_bytes", unitName: "", helpText: "Virtual memory size in bytes."))
        openDescriptors = registry.makeGauge(descriptor: MetricNameDescriptor(metricName: "process_open_fds", unitName: "", helpText: "Number of open file descriptors."))
        maxDescriptors = registry.makeGauge(descriptor: MetricNameDescriptor(metricName: "process_max_fds", unitName: "", helpText: "Maximum number of open file descriptors."))
        registry.makeGauge(descriptor: MetricNameDescriptor(metricName: "process_start_time_seconds", unitName: "", helpText: "Start time of the process since the Unix epoch, in seconds."))
            .set(Double(time(nil)))
    }

    /// Installs the backend; call before any metric is created.
    static func bootstrap() -> PrometheusMetricsExport {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        let latency: [Duration] = [.milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
                                   .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
                                   .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
                                   .seconds(30)]
        factory.durationHistogramBuckets = [ProxyMetrics.loginDuration: latency, ProxyMetrics.upstreamConnectDuration: latency]
        MetricsSystem.bootstrap(factory)
        return PrometheusMetricsExport(registry: registry)
    }

    /// The exposition text, with the process figures read now.
    func render() -> [UInt8] {
        updateProcessMetrics()
        return registry.emitToBuffer()
    }

    private func updateProcessMetrics() {
        #if os(Linux)
        if let stat = readProcFile("/proc/self/stat"), let close = stat.lastIndex(of: ")") {
            // Fields after "(comm)": state is field 3; utime 14, stime 15, vsize 23, rss 24.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
            if fields.count > 21, let utime = Double(fields[11]), let stime = Double(fields[12]), ticks > 0 {
                cpuSeconds.set((utime + stime) / ticks)
            }
            if fields.count > 21, let vsize = Double(fields[20]), let rss = Double(fields[21]) {
                virtualBytes.set(vsize)
                residentBytes.set(rss * Double(sysconf(Int32(_SC_PAGESIZE))))
            }
        }
        openDescriptors.set(Double(countEntries("/proc/self/fd")))
        #endif
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 { maxDescriptors.set(Double(limit.rlim_cur)) }
    }

    private func readProcFile(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = fread(&buffer, 1, buffer.count, file)
        return String(decoding: buffer[0..<count], as: UTF8.self)
    }

    /// Entries of a directory, without `.` and `..` (less the descriptor that reads it).
    private func countEntries(_ path: String) -> Int {
        guard let directory = opendir(path) else { return 0 }
        var count = 0
        while let entry = readdir(directory) {
            let isDot = withUnsafeBytes(of: entry.pointee.d_name) { name in name[0] == 0x2E && (name[1] == 0 || (name[1] == 0x2E && name[2] == 0)) }
            if !isDot { count += 1 }
        }
        closedir(directory)
        return max(0, count - 1)
    }
}
