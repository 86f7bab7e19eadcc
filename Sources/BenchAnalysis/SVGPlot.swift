import DirtyLogCore
import Foundation

/// One SVG per series, drawn here with no outside tool: harvest time against
/// dirty pages on log-log axes, a line per strategy and backend with its
/// p10-p90 band, the seed's threshold (n_used_mmu_pages) and the measured
/// crossover marked, a legend on the right. Noisy points are drawn hollow.
public enum SVGPlot {
    static let width = 960.0, height = 580.0
    static let left = 86.0, right = 230.0, top = 56.0, bottom = 64.0

    /// Colours per strategy, kernel lines dashed.
    static let palette: [String: String] = [
        "slot-walk": "#d62728", "rmap": "#1f77b4", "rmap-fixed": "#08519c", "seed": "#2ca02c",
        "masked": "#ff7f0e", "rmap-walk": "#7f7f7f", "tdp-walk": "#bcbd22", "tdp-masked": "#17becf",
        "dbit-clear": "#393b79", "clear-chunked": "#637939", "ring": "#843c39", "adaptive": "#000000",
        "kvm-get": "#9467bd", "kvm-get+clear": "#8c564b", "kvm-ring": "#e377c2",
    ]
    static let fallback = ["#444444", "#aa6600", "#006666", "#660066"]

    public static func render(series key: SeriesKey, rows all: [PointRow], crossover: CrossoverRow?) -> String {
        let rows = all.filter { $0.series == key && !$0.samples.isEmpty }
        guard !rows.isEmpty else { return "" }
        if key.scenario == .concurrent { return guestPanels(series: key, rows: rows) }
        if Set(rows.map(\.dirtyPages)).count == 1 { return totals(series: key, rows: rows) }
        let summaries = rows.map { ($0, $0.roundSummary) }
        let xs = rows.map { Double($0.dirtyPages) }
        let ys = summaries.flatMap { [$0.1.p10, $0.1.p90, $0.1.median] }.filter { $0 > 0 }
        let x0 = floor(log10(xs.min()!)), x1 = max(x0 + 1, ceil(log10(xs.max()!)))
        let y0 = floor(log10(ys.min()!)), y1 = max(y0 + 1, ceil(log10(ys.max()!)))
        let pw = width - left - right, ph = height - top - bottom
        func px(_ x: Double) -> Double { left + (log10(x) - x0) / (x1 - x0) * pw }
        func py(_ y: Double) -> Double { top + ph - (log10(max(y, 1e-9)) - y0) / (y1 - y0) * ph }

        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(left)" y="26" font-size="16" font-weight="bold">\(escape(key.label))</text>
        <text x="\(left)" y="44" fill="#555">harvest time per round (rings: with the harvests full rings forced); median, band p10-p90</text>

        """
        // Grid and ticks.
        for d in Int(x0)...Int(x1) {
            let x = px(pow(10, Double(d)))
            svg += line(x, top, x, top + ph, "#ccc", 1)
            svg += "<text x=\"\(f(x))\" y=\"\(f(top + ph + 18))\" text-anchor=\"middle\">\(countLabel(pow(10, Double(d))))</text>\n"
            if d < Int(x1) {
                for m in 2...9 { let xm = px(Double(m) * pow(10, Double(d))); svg += line(xm, top + ph, xm, top + ph + 4, "#999", 1) }
            }
        }
        for d in Int(y0)...Int(y1) {
            let y = py(pow(10, Double(d)))
            svg += line(left, y, left + pw, y, "#ccc", 1)
            svg += "<text x=\"\(f(left - 8))\" y=\"\(f(y + 4))\" text-anchor=\"end\">\(timeLabel(pow(10, Double(d))))</text>\n"
            if d < Int(y1) {
                for m in 2...9 { let ym = py(Double(m) * pow(10, Double(d))); svg += line(left - 4, ym, left, ym, "#999", 1) }
            }
        }
        svg += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(pw))\" height=\"\(f(ph))\" fill=\"none\" stroke=\"#333\"/>\n"
        svg += "<text x=\"\(f(left + pw / 2))\" y=\"\(f(height - 18))\" text-anchor=\"middle\" font-size=\"13\">dirty pages (4 KiB pages written since the last harvest, log scale)</text>\n"
        svg += "<text transform=\"translate(22 \(f(top + ph / 2))) rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">time per harvest (log scale)</text>\n"

        // The seed's threshold and the crossover, each labelled on the side
        // of its line that has room (about 6.6 px a character at 12 px).
        func marker(_ x: Double, y: Double, _ text: String, color: String) -> String {
            let fits = x + 4 + Double(text.count) * 6.6 <= left + pw
            return "<text x=\"\(f(fits ? x + 4 : x - 4))\" y=\"\(f(y))\" fill=\"\(color)\" text-anchor=\"\(fits ? "start" : "end")\">\(escape(text))</text>\n"
        }
        let nUsed = rows.first { $0.backend == .model }?.nUsedMMUPages ?? rows[0].nUsedMMUPages
        if Double(nUsed) >= pow(10, x0), Double(nUsed) <= pow(10, x1) {
            let x = px(Double(nUsed))
            svg += "<line x1=\"\(f(x))\" y1=\"\(f(top))\" x2=\"\(f(x))\" y2=\"\(f(top + ph))\" stroke=\"#2ca02c\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>\n"
            svg += marker(x, y: top + 14, "n_used_mmu_pages = \(nUsed): the seed switches here", color: "#2ca02c")
        }
        if let c = crossover?.crossoverDirtyPages {
            let x = px(c)
            svg += "<line x1=\"\(f(x))\" y1=\"\(f(top))\" x2=\"\(f(x))\" y2=\"\(f(top + ph))\" stroke=\"#000\" stroke-width=\"1\" stroke-dasharray=\"2 3\"/>\n"
            svg += marker(x, y: top + 30, "rmap = slot-walk at \(countLabel(c)) (crossover)", color: "#000")
        }

        // One line per backend and strategy.
        var lineKeys: [MeasuredStrategy] = []
        for r in rows where !lineKeys.contains(r.strategy) { lineKeys.append(r.strategy) }
        var legendY = top + 6
        for (i, lk) in lineKeys.enumerated() {
            let strategy = lk.name
            let pts = summaries.filter { $0.0.strategy == lk }.sorted { $0.0.dirtyPages < $1.0.dirtyPages }
            let color = palette[strategy] ?? fallback[i % fallback.count]
            let dash = lk.backend == .kvm ? " stroke-dasharray=\"7 3\"" : ""
            let band = pts.map { "\(f(px(Double($0.0.dirtyPages)))),\(f(py($0.1.p90)))" }
                + pts.reversed().map { "\(f(px(Double($0.0.dirtyPages)))),\(f(py($0.1.p10)))" }
            svg += "<polygon points=\"\(band.joined(separator: " "))\" fill=\"\(color)\" fill-opacity=\"0.12\" stroke=\"none\"/>\n"
            let path = pts.map { "\(f(px(Double($0.0.dirtyPages)))),\(f(py($0.1.median)))" }
            svg += "<polyline points=\"\(path.joined(separator: " "))\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"\(strategy == "adaptive" || strategy == "seed" ? 2.5 : 1.8)\"\(dash)/>\n"
            for p in pts {
                let fill = p.1.noisy ? "white" : color
                svg += "<circle cx=\"\(f(px(Double(p.0.dirtyPages))))\" cy=\"\(f(py(p.1.median)))\" r=\"2.6\" fill=\"\(fill)\" stroke=\"\(color)\"/>\n"
            }
            let lx = left + pw + 16
            svg += "<line x1=\"\(f(lx))\" y1=\"\(f(legendY))\" x2=\"\(f(lx + 26))\" y2=\"\(f(legendY))\" stroke=\"\(color)\" stroke-width=\"2.5\"\(dash)/>\n"
            svg += "<text x=\"\(f(lx + 32))\" y=\"\(f(legendY + 4))\">\(escape(strategy))\(lk.backend == .kvm ? " (kernel)" : "")</text>\n"
            legendY += 18
        }
        let lx = left + pw + 16
        svg += "<text x=\"\(f(lx))\" y=\"\(f(legendY + 14))\" fill=\"#555\">hollow: noisy point</text>\n"
        if rows.contains(where: { $0.backend == .kvm }) {
            svg += "<text x=\"\(f(lx))\" y=\"\(f(legendY + 30))\" fill=\"#555\">dashed: the real kernel</text>\n"
        }
        svg += "</svg>\n"
        return svg
    }

    /// A series of one point (the migration scenario: every round's
    /// harvest added up): a bar per strategy and backend, fastest first,
    /// its median labelled, a whisker from p10 to p90.
    static func totals(series key: SeriesKey, rows: [PointRow]) -> String {
        let bars = rows.map { ($0, $0.roundSummary) }.sorted { $0.1.median < $1.1.median }
        let barLeft = 150.0, barRight = 90.0, rowHeight = 24.0
        let h = top + Double(bars.count) * rowHeight + bottom
        let pw = width - barLeft - barRight
        let most = bars.map { max($0.1.p90, $0.1.median) }.max()!
        let step = pow(10, floor(log10(most))) * (most / pow(10, floor(log10(most))) > 5 ? 2 : most / pow(10, floor(log10(most))) > 2 ? 1 : 0.5)
        let xMax = ceil(most / step) * step
        func px(_ v: Double) -> Double { barLeft + v / xMax * pw }
        let rounds = rows[0].rounds
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(h))" viewBox="0 0 \(Int(width)) \(Int(h))" font-family="Helvetica, Arial, sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(left)" y="26" font-size="16" font-weight="bold">\(escape(key.label))</text>
        <text x="\(left)" y="44" fill="#555">\(rounds) round\(rounds == 1 ? "" : "s"), \(countLabel(Double(rows[0].dirtyPages))) dirty pages in all; median, whisker p10-p90; pale bar: noisy</text>

        """
        var v = 0.0
        while v <= xMax * 1.0001 {
            svg += line(px(v), top, px(v), h - bottom, "#ddd", 1)
            svg += "<text x=\"\(f(px(v)))\" y=\"\(f(h - bottom + 18))\" text-anchor=\"middle\">\(v == 0 ? "0" : timeLabel(v))</text>\n"
            v += step
        }
        svg += "<text x=\"\(f(barLeft + pw / 2))\" y=\"\(f(h - 18))\" text-anchor=\"middle\" font-size=\"13\">protection time over all rounds (rings: with the harvests full rings forced)</text>\n"
        for (i, (r, sum)) in bars.enumerated() {
            let y = top + Double(i) * rowHeight
            let color = palette[r.strategy.name] ?? fallback[i % fallback.count]
            let name = r.strategy.name + (r.backend == .kvm ? " (kernel)" : "")
            svg += "<text x=\"\(f(barLeft - 8))\" y=\"\(f(y + 16))\" text-anchor=\"end\">\(escape(name))</text>\n"
            svg += "<rect x=\"\(f(barLeft))\" y=\"\(f(y + 5))\" width=\"\(f(px(sum.median) - barLeft))\" height=\"\(f(rowHeight - 10))\" fill=\"\(color)\" fill-opacity=\"\(sum.noisy ? 0.45 : 0.85)\"/>\n"
            svg += line(px(sum.p10), y + rowHeight / 2, px(sum.p90), y + rowHeight / 2, "#333", 1.2)
            svg += "<text x=\"\(f(px(max(sum.p90, sum.median)) + 6))\" y=\"\(f(y + 16))\">\(Reports.duration(sum.median))</text>\n"
        }
        svg += "</svg>\n"
        return svg
    }

    /// The concurrent scenario's plot: three log-log panels against dirty
    /// pages, a line per strategy: the harvest's time with the vCPUs
    /// running, its longest hold of mmu_lock (either side, from the
    /// instrumented repetitions), and the 99th percentile of the vCPUs'
    /// write-fault latency during it. A strategy whose vCPUs did not fault
    /// at a point has no marker there in the last panel.
    static func guestPanels(series key: SeriesKey, rows: [PointRow]) -> String {
        let panels: [(title: String, value: (PointRow) -> Double?)] = [
            ("harvest time, vCPUs running", { $0.summary.median }),
            ("longest mmu_lock hold", { r in r.guest.flatMap { g in [g.exclusiveHolds.maxNs, g.sharedHolds.maxNs].compactMap { $0 }.max() } }),
            ("vCPU write-fault p99", { $0.guest?.faultP99Ns }),
        ]
        // The panels start lower than the other plots': two header lines, then the panels' titles.
        let panelWidth = 232.0, gap = 28.0, left = 70.0, top = 78.0, ph = height - top - bottom
        let xs = rows.map { Double($0.dirtyPages) }
        let x0 = floor(log10(xs.min()!)), x1 = max(x0 + 1, ceil(log10(xs.max()!)))
        let ys = rows.flatMap { r in panels.compactMap { $0.value(r) } }.filter { $0 > 0 }
        guard !ys.isEmpty else { return "" }
        let y0 = floor(log10(ys.min()!)), y1 = max(y0 + 1, ceil(log10(ys.max()!)))
        func py(_ y: Double) -> Double { top + ph - (log10(max(y, 1e-9)) - y0) / (y1 - y0) * ph }
        var strategies: [MeasuredStrategy] = []
        for r in rows where !strategies.contains(r.strategy) { strategies.append(r.strategy) }
        var svg = """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(left)" y="26" font-size="16" font-weight="bold">\(escape(key.label))</text>
        <text x="\(left)" y="44" fill="#555">what the guest pays: harvest, median of the timed repetitions; longest hold of either side of mmu_lock, from the instrumented ones;</text>
        <text x="\(left)" y="58" fill="#555">fault p99 pooled over the timed repetitions' faults (HdrHistogram), each from its VM exit to the entry; one time axis, log scale</text>

        """
        for (k, panel) in panels.enumerated() {
            let pl = left + Double(k) * (panelWidth + gap)
            func px(_ x: Double) -> Double { pl + (log10(x) - x0) / (x1 - x0) * panelWidth }
            for d in Int(x0)...Int(x1) {
                let x = px(pow(10, Double(d)))
                svg += line(x, top, x, top + ph, "#ddd", 1)
                svg += "<text x=\"\(f(x))\" y=\"\(f(top + ph + 16))\" text-anchor=\"middle\">\(countLabel(pow(10, Double(d))))</text>\n"
            }
            for d in Int(y0)...Int(y1) {
                let y = py(pow(10, Double(d)))
                svg += line(pl, y, pl + panelWidth, y, "#ddd", 1)
                if k == 0 { svg += "<text x=\"\(f(pl - 6))\" y=\"\(f(y + 4))\" text-anchor=\"end\">\(timeLabel(pow(10, Double(d))))</text>\n" }
            }
            svg += "<rect x=\"\(f(pl))\" y=\"\(f(top))\" width=\"\(f(panelWidth))\" height=\"\(f(ph))\" fill=\"none\" stroke=\"#333\"/>\n"
            svg += "<text x=\"\(f(pl + panelWidth / 2))\" y=\"\(f(top - 6))\" text-anchor=\"middle\" font-weight=\"bold\">\(escape(panel.title))</text>\n"
            for (i, s) in strategies.enumerated() {
                let color = palette[s.name] ?? fallback[i % fallback.count]
                let pts = rows.filter { $0.strategy == s }.sorted { $0.dirtyPages < $1.dirtyPages }
                    .compactMap { r in panel.value(r).flatMap { $0 > 0 ? (px(Double(r.dirtyPages)), py($0)) : nil } }
                guard !pts.isEmpty else { continue }
                svg += "<polyline points=\"\(pts.map { "\(f($0.0)),\(f($0.1))" }.joined(separator: " "))\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.8\"/>\n"
                for p in pts { svg += "<circle cx=\"\(f(p.0))\" cy=\"\(f(p.1))\" r=\"2.6\" fill=\"\(color)\"/>\n" }
            }
        }
        svg += "<text x=\"\(f(left + (3 * panelWidth + 2 * gap) / 2))\" y=\"\(f(height - 18))\" text-anchor=\"middle\" font-size=\"13\">dirty pages (log scale)</text>\n"
        let lx = left + 3 * panelWidth + 2 * gap + 16
        var ly = top + 6
        for (i, s) in strategies.enumerated() {
            let color = palette[s.name] ?? fallback[i % fallback.count]
            svg += "<line x1=\"\(f(lx))\" y1=\"\(f(ly))\" x2=\"\(f(lx + 22))\" y2=\"\(f(ly))\" stroke=\"\(color)\" stroke-width=\"2.5\"/>\n"
            svg += "<text x=\"\(f(lx + 28))\" y=\"\(f(ly + 4))\">\(escape(s.name))</text>\n"
            ly += 18
        }
        svg += "</svg>\n"
        return svg
    }

    static func line(_ x1: Double, _ y1: Double, _ x2: Double, _ y2: Double, _ color: String, _ w: Double) -> String {
        "<line x1=\"\(f(x1))\" y1=\"\(f(y1))\" x2=\"\(f(x2))\" y2=\"\(f(y2))\" stroke=\"\(color)\" stroke-width=\"\(w)\"/>\n"
    }

    static func f(_ v: Double) -> String { String(format: "%.1f", v) }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }

    /// 1, 10, 100, 1k, 10k, 100k, 1M, ...
    static func countLabel(_ v: Double) -> String {
        v >= 1e6 ? String(format: "%gM", (v / 1e6 * 10).rounded() / 10) : v >= 1e3 ? String(format: "%gk", (v / 1e3 * 10).rounded() / 10) : String(format: "%g", v.rounded())
    }

    /// 100 ns, 1 µs, 10 µs, ... 1 s.
    static func timeLabel(_ ns: Double) -> String {
        ns >= 1e9 ? String(format: "%g s", ns / 1e9) : ns >= 1e6 ? String(format: "%g ms", ns / 1e6)
            : ns >= 1e3 ? String(format: "%g µs", ns / 1e3) : String(format: "%g ns", ns)
    }
}
