//! How the model advances with time and prints a body.

use super::*;

impl MetricsModel {
    /// The value as printed: integers floor-truncated so that printed counters stay
    /// monotonic while their exact value accumulates fractions.
    pub(super) fn shown(&self, i: usize) -> f64 {
        let (v, q) = (self.values[i], self.quantum[i]);
        if q > 0.0 {
            (v / q).floor() * q
        } else {
            v
        }
    }

    pub(super) fn jitter(&mut self) -> f64 {
        self.rng.random_range(0.5..1.5)
    }

    pub(super) fn step(&mut self, dt: f64, now: f64) {
        self.step_cpu(dt);
        let n = self.values.len();
        for i in 0..n {
            match self.rules[i] {
                Rule::Counter { rate, activity } if rate > 0.0 => {
                    let f = if activity { self.activity } else { 1.0 };
                    let j = self.jitter();
                    self.values[i] += rate * dt * f * j;
                }
                Rule::Walk { lo, hi, step } if dt > 0.0 || self.renders == 0 => {
                    let d: f64 = self.rng.random_range(-step..=step);
                    self.values[i] = (self.values[i] + d.round()).clamp(lo, hi);
                }
                _ => {}
            }
        }
        for i in 0..n {
            if let Rule::Follow { src, offset_rate } = self.rules[i] {
                let j = self.jitter();
                self.offsets[i] += offset_rate * dt * self.activity * j;
                let v = self.values[src] + self.offsets[i];
                self.values[i] = self.values[i].max(v);
            }
        }
        self.step_mem();
        self.step_procs(dt);
        self.step_hists(dt);
        self.step_go(dt, now);
        self.step_guest_misc(dt);
        self.step_process_derived(now);
        for &(i, base) in &self.scrape_counts {
            self.values[i] = base + self.renders as f64;
        }
    }

    pub(super) fn step_cpu(&mut self, dt: f64) {
        let Some(cpu) = self.cpu.as_mut() else {
            return;
        };
        let dt_ms = dt * 1000.0;
        for c in 0..cpu.cpus.len() {
            let noise: f64 = self.rng.random_range(-1.0..1.0);
            let b = cpu.busy_now[c];
            let next = b + (cpu.busy_target - b) * 0.3 + noise * cpu.busy_target * 0.4;
            cpu.busy_now[c] = next.clamp(0.001, 0.97);
            let busy_ms = dt_ms * cpu.busy_now[c];
            for &k in &BUSY_ITEMS {
                cpu.exact[c][k] += busy_ms * cpu.split[c][k];
            }
            cpu.exact[c][IDLE] += dt_ms - busy_ms;
        }
        let mut totals = [0.0; 10];
        for (exact, slots) in cpu.exact.iter().zip(&cpu.cpus) {
            for ((total, value), slot) in totals.iter_mut().zip(exact).zip(slots) {
                // The agent converts USER_HZ ticks to ms, so values are multiples of 10.
                let shown = (value / 10.0).floor() * 10.0;
                *total += shown;
                if let Some(i) = slot {
                    self.values[*i] = shown;
                }
            }
        }
        for (total, slot) in totals.iter().zip(&cpu.total) {
            if let Some(i) = slot {
                self.values[*i] = *total;
            }
        }
        let now: f64 = cpu.busy_now.iter().sum::<f64>() / cpu.busy_now.len().max(1) as f64;
        let base: f64 = cpu.base_busy.iter().sum::<f64>() / cpu.base_busy.len().max(1) as f64;
        self.activity = (now / base.max(1e-4)).clamp(0.2, 30.0);
    }

    pub(super) fn step_mem(&mut self) {
        let Some(mut mem) = self.mem.take() else {
            return;
        };
        let page = 4096.0;
        let r1: f64 = self.rng.random_range(-1.0..1.0);
        let r2: f64 = self.rng.random_range(-0.6..1.0);
        let anon = mem.anon + (mem.anon_target - mem.anon) * 0.2 + r1 * mem.base_anon * 0.03;
        mem.anon = (anon.clamp(mem.base_anon * 0.8, mem.base_anon * 3.0) / page).round() * page;
        let cache = mem.cache + r2 * mem.base_cache * 0.01;
        mem.cache = (cache.clamp(mem.base_cache * 0.9, mem.base_cache * 2.5) / page).round() * page;
        let used_delta = (mem.anon - mem.base_anon) + (mem.cache - mem.base_cache);
        let free = mem.base_free - used_delta;
        let file = mem.cache + mem.buffers - mem.shmem;
        let inactive_file = (file * mem.inactive_file_ratio / page).round() * page;
        let active_file = file - inactive_file;
        let active_anon = mem.anon + mem.shmem;
        let reclaim = (mem.base_available - mem.base_free) * (file / mem.base_file);
        let available = ((free + reclaim) / page).floor().min(mem.total / page) * page;
        let set = |m: &mut Self, k: &str, v: f64| {
            if let Some(&i) = mem.idx.get(k) {
                m.values[i] = v.max(0.0);
            }
        };
        set(self, "mem_free", free);
        set(self, "mem_available", available);
        set(self, "cached", mem.cache);
        set(self, "anon_pages", mem.anon);
        set(self, "active_anon", active_anon);
        set(self, "active_file", active_file);
        set(self, "inactive_file", inactive_file);
        set(self, "active", active_anon + active_file);
        set(self, "inactive", mem.inactive_anon + inactive_file);
        set(
            self,
            "committed_as",
            mem.base_committed + (mem.anon - mem.base_anon),
        );
        set(self, "nr_free_pages", (free / page).floor());
        set(self, "nr_active_anon", (active_anon / page).floor());
        set(self, "nr_zone_active_anon", (active_anon / page).floor());
        set(self, "nr_anon_pages", (mem.anon / page).floor());
        set(self, "nr_active_file", (active_file / page).floor());
        set(self, "nr_zone_active_file", (active_file / page).floor());
        set(self, "nr_inactive_file", (inactive_file / page).floor());
        set(
            self,
            "nr_zone_inactive_file",
            (inactive_file / page).floor(),
        );
        set(
            self,
            "nr_file_pages",
            ((mem.cache + mem.buffers) / page).floor(),
        );
        // Occasionally the workload changes its memory appetite.
        if self.rng.random::<f64>() < 0.05 {
            mem.anon_target = mem.base_anon * self.rng.random_range(0.9..2.5);
        }
        self.mem = Some(mem);
    }

    pub(super) fn step_procs(&mut self, dt: f64) {
        let procs = std::mem::take(&mut self.procs);
        for p in &procs {
            let Some(&anon_i) = p.idx.get("rssanon") else {
                continue;
            };
            let r: f64 = self.rng.random_range(-1.0..1.0);
            let anon = self.values[anon_i] + r * p.base_anon * 0.03;
            let anon = (anon.clamp(p.base_anon * 0.9, p.base_anon * 1.5) / p.page).round() * p.page;
            self.values[anon_i] = anon;
            let g = |m: &Self, k: &str| p.idx.get(k).map(|&i| m.values[i]).unwrap_or(0.0);
            let rss = anon + g(self, "rssfile") + g(self, "rssshmem");
            let delta = anon - p.base_anon;
            let vmsize = p.base_vmsize + delta;
            let updates = [
                ("vmrss", rss),
                ("vmhwm", g(self, "vmhwm").max(rss)),
                ("vmdata", p.base_vmdata + delta),
                ("vmsize", vmsize),
                ("vmpeak", g(self, "vmpeak").max(vmsize)),
            ];
            for (k, v) in updates {
                if let Some(&i) = p.idx.get(k) {
                    self.values[i] = v;
                }
            }
        }
        self.procs = procs;
        // VMM CPU ticks (USER_HZ = 100) = guest vCPU time + the VMM's own work.
        if let Some(cpu) = self.cpu.as_ref() {
            let user: f64 = cpu.exact.iter().map(|e| e[0] + e[1]).sum::<f64>() / 10.0;
            let sys: f64 = cpu.exact.iter().map(|e| e[2] + e[5] + e[6]).sum::<f64>() / 10.0;
            let stats = std::mem::take(&mut self.vmm_stat);
            for &(i, own_rate, is_user) in &stats {
                let own = own_rate * self.last_elapsed + own_rate * self.age0;
                let guest = if is_user { user } else { sys };
                self.values[i] = self.values[i].max(guest + own);
            }
            self.vmm_stat = stats;
        }
        let _ = dt;
    }

    pub(super) fn observe(&mut self, g: usize) {
        let total: f64 = self.hists[g].weights.iter().sum();
        let mut pick = 0;
        if total > 0.0 {
            let mut r = self.rng.random_range(0.0..total);
            for (k, w) in self.hists[g].weights.iter().enumerate() {
                if r < *w {
                    pick = k;
                    break;
                }
                r -= w;
            }
        }
        let buckets = &self.hists[g].buckets;
        let Some(&(le, _)) = buckets.get(pick) else {
            return;
        };
        let lo = if pick == 0 { 0.0 } else { buckets[pick - 1].0 };
        let hi = if le.is_finite() { le } else { lo * 4.0 };
        // Durations are whole milliseconds (truncated), as the Go shim observes them.
        let v = if pick == 0 {
            self.rng.random_range(0..=hi as u64) as f64
        } else {
            self.rng
                .random_range((lo as u64 + 1)..=(hi as u64).max(lo as u64 + 1)) as f64
        };
        let (sum, count) = (self.hists[g].sum, self.hists[g].count);
        for &(le, i) in &self.hists[g].buckets {
            if v <= le {
                self.values[i] += 1.0;
            }
        }
        self.values[sum] += v;
        self.values[count] += 1.0;
    }

    pub(super) fn step_hists(&mut self, dt: f64) {
        for g in 0..self.hists.len() {
            if self.hists[g].rate <= 0.0 {
                continue;
            }
            let j = self.jitter();
            self.hists[g].acc += self.hists[g].rate * dt * j;
            while self.hists[g].acc >= 1.0 {
                self.hists[g].acc -= 1.0;
                self.observe(g);
            }
        }
    }

    pub(super) fn step_go(&mut self, dt: f64, now: f64) {
        let Some(mut rt) = self.go.take() else {
            return;
        };
        let j = self.jitter();
        rt.gc_acc += rt.gc_rate * dt * j * self.activity.sqrt();
        let mut gcs = 0;
        while rt.gc_acc >= 1.0 {
            rt.gc_acc -= 1.0;
            gcs += 1;
        }
        if gcs > 0 {
            let lo = rt.quantiles.get(1).map(|q| q.2).unwrap_or(2e-5);
            let hi = rt
                .quantiles
                .get(3)
                .map(|q| q.2)
                .unwrap_or(1e-4)
                .max(lo * 1.01);
            for _ in 0..gcs {
                let d: f64 = if hi > lo {
                    self.rng.random_range(lo..hi)
                } else {
                    lo
                };
                self.values[rt.gc_sum] = round_to(self.values[rt.gc_sum] + d, 1e9);
            }
            self.values[rt.gc_count] += gcs as f64;
            let mut qs: Vec<f64> = rt
                .quantiles
                .iter()
                .map(|q| round_to(q.2 * self.rng.random_range(0.8..1.25), 1e9))
                .collect();
            qs.sort_by(|a, b| a.total_cmp(b));
            for (q, v) in rt.quantiles.iter().zip(qs) {
                self.values[q.1] = v;
            }
            if let Some(i) = rt.last_gc {
                let ago = self.rng.random_range(0.0..dt.clamp(0.001, 60.0));
                self.values[i] = self.start_unix + now - ago;
            }
        }
        if let Some(a) = rt.alloc {
            let r: f64 = self.rng.random_range(-1.0..1.0);
            let v = (self.values[a] + r * rt.base_alloc * 0.08)
                .clamp(rt.base_alloc * 0.6, rt.base_alloc * 1.6)
                .round();
            self.values[a] = v;
            if let Some(h) = rt.heap_alloc {
                self.values[h] = v;
            }
            let inuse = ((rt.base_inuse + v - rt.base_alloc) / 8192.0).round() * 8192.0;
            if let Some(h) = rt.heap_inuse {
                self.values[h] = inuse;
            }
            if let Some(h) = rt.heap_idle {
                self.values[h] = (rt.heap_sys - inuse).max(0.0);
            }
            if let (Some(m), Some(f), Some(o)) = (rt.mallocs, rt.frees, rt.heap_objects) {
                let target = (rt.base_objects * v / rt.base_alloc.max(1.0)).round();
                let mallocs = self.values[m].floor();
                let frees = self.values[f].max(mallocs - target).min(mallocs);
                self.values[f] = frees;
                self.values[o] = mallocs - frees;
            }
        }
        self.go = Some(rt);
    }

    pub(super) fn step_guest_misc(&mut self, dt: f64) {
        let running: f64 = self
            .cpu
            .as_ref()
            .map(|c| c.busy_now.iter().sum())
            .unwrap_or(0.0);
        let mut loads = std::mem::take(&mut self.loads);
        for (i, exact, tau) in loads.iter_mut() {
            let e = (-dt / *tau).exp();
            *exact = *exact * e + running * (1.0 - e);
            // /proc/loadavg has two decimals; the agent parses it as f32.
            self.values[*i] = ((*exact * 100.0).round() / 100.0) as f32 as f64;
        }
        self.loads = loads;
        if let Some(i) = self.idx("kata_guest_tasks", &[("item", "cur")]) {
            let extra = if self.rng.random::<f64>() < running.min(1.0) {
                1.0
            } else {
                0.0
            };
            self.values[i] = 1.0 + extra;
        }
        self.step_filesystems(dt);
        if self.renders > 0 {
            if let Some(i) = self.idx("kata_shim_pod_overhead_cpu", &[]) {
                let base = self.tpl.samples[i].value;
                let r: f64 = self.rng.random_range(-1.0..1.0);
                self.values[i] = base * self.activity.sqrt() + r * 0.4;
                self.quantum[i] = 0.0;
            }
            if let Some(i) = self.idx("kata_shim_pod_overhead_memory_in_bytes", &[]) {
                let base = self.tpl.samples[i].value;
                let r: f64 = self.rng.random_range(-0.1..0.1);
                self.values[i] = (base * (1.0 + r) / 4096.0).round() * 4096.0;
            }
        } else {
            // The Go shim samples pod overhead in the background after a scrape, so the
            // first scrape reports zeros.
            for n in [
                "kata_shim_pod_overhead_cpu",
                "kata_shim_pod_overhead_memory_in_bytes",
            ] {
                if let Some(i) = self.idx(n, &[]) {
                    self.values[i] = 0.0;
                }
            }
        }
    }

    /// Filesystems fill slowly; available = total - used, in blocks for bytes.
    fn step_filesystems(&mut self, dt: f64) {
        for fam in [
            "kata_guest_filesystem_bytes",
            "kata_guest_filesystem_inodes",
        ] {
            let samples = self.family_samples(fam);
            let mut groups: BTreeMap<String, [Option<usize>; 3]> = BTreeMap::new();
            for i in samples {
                let s = &self.tpl.samples[i];
                let key = format!("{:?}{:?}", s.label("device"), s.label("mount"));
                let slot = match s.label("item") {
                    Some("total") => 0,
                    Some("used") => 1,
                    Some("available") => 2,
                    _ => continue,
                };
                groups.entry(key).or_default()[slot] = Some(i);
            }
            let rate = if fam.ends_with("bytes") { 2048.0 } else { 0.05 };
            for [t, u, a] in groups.into_values() {
                let (Some(t), Some(u), Some(a)) = (t, u, a) else {
                    continue;
                };
                let j = self.jitter();
                let total = self.values[t];
                let grow = rate * dt * j * self.activity;
                let used = (self.values[u] + grow).min(total * 0.95);
                self.values[u] = used;
                // Byte usage moves in filesystem blocks.
                if fam.ends_with("bytes") {
                    self.quantum[u] = 4096.0;
                }
                self.values[a] = total - self.shown(u);
            }
        }
    }

    pub(super) fn step_process_derived(&mut self, _now: f64) {
        let get = |m: &Self, n: &str, l: &[(&str, &str)]| m.idx(n, l).map(|i| m.values[i]);
        let set = |m: &mut Self, n: &str, v: Option<f64>| {
            if let (Some(i), Some(v)) = (m.idx(n, &[]), v) {
                m.values[i] = v;
            }
        };
        let ticks = |m: &Self, fam: &str| -> Option<f64> {
            Some(
                get(m, fam, &[("item", "utime")])?.floor()
                    + get(m, fam, &[("item", "stime")])?.floor(),
            )
        };
        let shim_ticks = ticks(self, "kata_shim_proc_stat");
        set(
            self,
            "process_cpu_seconds_total",
            shim_ticks.map(|t| t / 100.0),
        );
        let fds = get(self, "kata_shim_fds", &[]);
        set(self, "process_open_fds", fds);
        let rss = get(self, "kata_shim_proc_status", &[("item", "vmrss")]);
        set(self, "process_resident_memory_bytes", rss);
        if let (Some(i), Some(vmsize)) = (
            self.idx("process_virtual_memory_bytes", &[]),
            get(self, "kata_shim_proc_status", &[("item", "vmsize")]),
        ) {
            let off = self.tpl.samples[i].value
                - self
                    .idx("kata_shim_proc_status", &[("item", "vmsize")])
                    .map(|j| self.tpl.samples[j].value)
                    .unwrap_or(0.0);
            self.values[i] = vmsize + off;
        }
        let agent_rss = get(self, "kata_agent_proc_status", &[("item", "vmrss")]);
        set(self, "kata_agent_total_rss", agent_rss.map(|v| v * 1024.0));
        let agent_vm = get(self, "kata_agent_proc_status", &[("item", "vmsize")]);
        set(self, "kata_agent_total_vm", agent_vm.map(|v| v * 1024.0));
        let agent_ticks = ticks(self, "kata_agent_proc_stat");
        set(
            self,
            "kata_agent_total_time",
            agent_ticks.map(|t| t / 100.0),
        );
        for n in ["process_cpu_seconds_total", "kata_agent_total_time"] {
            if let Some(i) = self.idx(n, &[]) {
                self.quantum[i] = 0.0;
                self.values[i] = (self.values[i] * 100.0).round() / 100.0;
            }
        }
    }

    pub(super) fn after_scrape(&mut self) {
        // The agent RPC serving this scrape is recorded only after the shim gathered its
        // own registry, so it shows up in the next scrape.
        for g in 0..self.hists.len() {
            if self.hists[g].per_scrape {
                self.observe(g);
            }
        }
        self.renders += 1;
    }

    pub(super) fn format(&mut self) -> String {
        let fmt: fn(f64) -> String = match self.flavour {
            Flavour::Go => go_float,
            Flavour::RuntimeRs => rust_float,
        };
        let mut order: Vec<usize> = (0..self.tpl.families.len()).collect();
        if self.flavour == Flavour::Go {
            // The Go shim re-encodes the agent's families from a map: random order per scrape.
            let agent: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&f| is_agent_family(&self.tpl.families[f].name))
                .collect();
            let mut shuffled = agent.clone();
            shuffled.shuffle(&mut self.rng);
            let mut it = shuffled.into_iter();
            for slot in order.iter_mut() {
                if is_agent_family(&self.tpl.families[*slot].name) {
                    if let Some(f) = it.next() {
                        *slot = f;
                    }
                }
            }
        }
        let mut out = String::with_capacity(96 * 1024);
        for f in order {
            let fam = &self.tpl.families[f];
            out.push_str(&fam.header);
            for &i in &fam.samples {
                out.push_str(&self.tpl.samples[i].name);
                let labels = self.label_override[i].as_deref();
                out.push_str(labels.unwrap_or(&self.tpl.samples[i].label_text));
                out.push(' ');
                out.push_str(&fmt(self.shown(i)));
                out.push('\n');
            }
        }
        out
    }
}
