//! The CNNPC search proper (see `search.rs` for the ideas): A0 and T0 objectives.

use crate::planner::accuracy::{CompressionPoint, MeasuringOracle, OracleError, WireEncoding};
use crate::planner::latency::LinearLatency;
use crate::planner::search::{Candidate, Planner, SearchConfig};

const EPS: f64 = 1e-9;
/// Linear interpolation under-estimates a flat-topped curve; before any joint point calibrates
/// the composed estimate, joint points estimated this close below the floor are still worth a
/// measurement.
const JOINT_MARGIN: f64 = 0.002;
/// A bracket probe stays at least 1/SAFEGUARD of the bracket away from either end, so even a
/// badly wrong interpolation shrinks the bracket geometrically.
const SAFEGUARD: u32 = 4;
/// T0 stops bisecting on accuracy once the bracket is this narrow.
const ACCURACY_TOLERANCE: f64 = 0.001;

/// What is known of one cut's single-cut accuracy curve in one encoding: measured `(kept,
/// accuracy)` points (at `kept = channels` the measured unpruned cut in a lossy encoding, else
/// the uncompressed model), ascending, and what other
/// encodings' measurements bound (with `reuse`): a coarser encoding's value is a floor under
/// this one's at the same channels, a finer encoding's a ceiling.
struct Curve {
    channels: u32,
    /// Measured here, or a coarser encoding's value where nothing is measured here: what CAE
    /// interpolates (conservatively) and where a bracket's `hi` may come from.
    points: Vec<(u32, f64)>,
    /// Values that are ceilings (measured here, or a finer encoding's): where a bracket's `lo`
    /// may come from and what bounds the curve from above.
    caps: Vec<(u32, f64)>,
}

impl Curve {
    fn of(
        m: &MeasuringOracle,
        cut: usize,
        channels: u32,
        enc: WireEncoding,
        base: f64,
        reuse: bool,
    ) -> Self {
        let (mut points, mut caps, mut floors) = (Vec::new(), Vec::new(), Vec::new());
        for (p, a) in m.values() {
            if p.input || p.cuts.len() != 1 || p.cuts[0].cut != cut {
                continue;
            }
            let k = p.cuts[0].kept;
            let (here, bits) = (p.encoding == enc, p.encoding.bits());
            if here {
                points.push((k, a));
                caps.push((k, a));
            } else if reuse && bits < enc.bits() {
                floors.push((k, a));
            } else if reuse && bits > enc.bits() {
                caps.push((k, a));
            }
        }
        // A coarser encoding's value stands in only where nothing is measured here (the best
        // of them: each is a floor).
        floors.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
        floors.dedup_by_key(|p| p.0);
        for f in floors {
            if !points.iter().any(|p| p.0 == f.0) {
                points.push(f);
            }
        }
        // The whole cut is the unmodified model's accuracy, unless this encoding was measured
        // there (it loses against the data's own: the point lists the unpruned cut).
        if !points.iter().any(|p| p.0 == channels) {
            points.push((channels, base));
        }
        points.sort_by_key(|p| p.0);
        caps.push((channels, base));
        caps.sort_by_key(|p| p.0);
        Curve {
            channels,
            points,
            caps,
        }
    }

    /// The bracket around the threshold for `a0`: `hi` = fewest channels known to reach it,
    /// `lo` = most channels below `hi` known to miss it (0 when none).
    fn bracket(&self, a0: f64) -> ((u32, f64), (u32, f64)) {
        let hi = self
            .points
            .iter()
            .copied()
            .find(|p| p.1 >= a0)
            .unwrap_or((self.channels, 1.0));
        let lo = self
            .caps
            .iter()
            .copied()
            .rfind(|p| p.0 < hi.0 && p.1 < a0)
            .unwrap_or((0, 0.0));
        (lo, hi)
    }

    /// CAE: linear interpolation between the nearest measured points, with 0 accuracy at 0
    /// channels as the lower anchor (conservative where nothing below was measured).
    fn estimates(&self) -> Vec<f64> {
        let mut est = vec![0.0; self.channels as usize + 1];
        let mut prev = (0u32, 0.0f64);
        for &(k, a) in &self.points {
            for m in prev.0..=k {
                let t = if k == prev.0 {
                    1.0
                } else {
                    f64::from(m - prev.0) / f64::from(k - prev.0)
                };
                est[m as usize] = prev.1 + t * (a - prev.1);
            }
            prev = (k, a);
        }
        est
    }

    /// Upper bounds from monotonicity: no point beats a known ceiling that keeps more.
    fn upper_bounds(&self) -> Vec<f64> {
        let mut ub = vec![1.0; self.channels as usize + 1];
        let mut running = 1.0f64;
        let mut it = self.caps.iter().rev().peekable();
        for m in (0..=self.channels).rev() {
            while let Some(&&(k, a)) = it.peek() {
                if k >= m {
                    running = running.min(a);
                    it.next();
                } else {
                    break;
                }
            }
            ub[m as usize] = running;
        }
        ub
    }
}

/// Largest `kept` with `fixed + slope * kept < budget`, capped at `channels` (0 when none).
fn cap(fixed: f64, slope: f64, budget: f64, channels: u32) -> u32 {
    if slope <= 0.0 {
        return if fixed < budget - EPS { channels } else { 0 };
    }
    let x = ((budget - EPS - fixed) / slope).ceil() - 1.0;
    if x < 1.0 {
        0
    } else {
        (x as u32).min(channels)
    }
}

impl Planner<'_> {
    fn measure_single(
        &self,
        m: &mut MeasuringOracle,
        cut: usize,
        kept: u32,
        enc: WireEncoding,
    ) -> Result<f64, OracleError> {
        let channels = self.profile.cuts[cut].channels;
        m.accuracy(&CompressionPoint::new(&[cut], &[kept], &[channels], enc))
    }

    /// Narrows the single-cut threshold for `a0` at `cut`, measuring only below `limit` channels
    /// (more cannot win) and stopping when `done(lo, hi)`. Interpolates to guess the crossing
    /// (CAE) but keeps every guess inside the middle half of the bracket, so a curve of C
    /// channels costs at most ~2.4·log2(C) measurements and usually 2–4.
    #[allow(clippy::too_many_arguments)]
    fn bracket(
        &self,
        m: &mut MeasuringOracle,
        cut: usize,
        enc: WireEncoding,
        base: f64,
        a0: f64,
        limit: u32,
        reuse: bool,
        done: &dyn Fn(u32, u32) -> bool,
    ) -> Result<(u32, u32), OracleError> {
        let channels = self.profile.cuts[cut].channels;
        loop {
            let curve = Curve::of(m, cut, channels, enc, base, reuse);
            let ((lo, alo), (hi, ahi)) = curve.bracket(a0);
            if lo >= limit || hi <= lo + 1 || done(lo, hi) {
                return Ok((lo, hi));
            }
            // With nothing measured below, the anchor (0 channels, accuracy 0) is a guess, and a
            // pessimistic one for the usual flat-then-knee curve: bisect instead of trusting it.
            let guess = if lo == 0 {
                f64::from(hi) / 2.0
            } else if ahi > alo {
                f64::from(lo) + f64::from(hi - lo) * (a0 - alo) / (ahi - alo)
            } else {
                f64::from(lo + hi) / 2.0
            };
            let span = hi - lo;
            let margin = (span / SAFEGUARD).max(1);
            let (min, max) = (lo + margin, hi - margin);
            let probe = (guess.ceil() as u32).clamp(min, max).min(limit);
            self.measure_single(m, cut, probe, enc)?;
        }
    }

    /// A0: the lowest-latency plan whose search value is at least `a0` (a threshold, see
    /// [`MeasuringOracle::threshold_for`]); sequential measurements are decided against it.
    ///
    /// `start` is the best plan found so far (another encoding's, with `reuse`): the search
    /// starts from it when it beats this encoding's best uncompressed split, so CRS rules out
    /// every deployment that cannot beat it.
    pub(crate) fn min_latency(
        &self,
        enc: WireEncoding,
        a0: f64,
        config: &SearchConfig,
        m: &mut MeasuringOracle,
        start: Option<&Candidate>,
    ) -> Result<Option<Candidate>, OracleError> {
        let before = m.set_threshold(Some(a0));
        let found = self.min_latency_at(enc, a0, config, m, start);
        m.set_threshold(before);
        found
    }

    fn min_latency_at(
        &self,
        enc: WireEncoding,
        a0: f64,
        config: &SearchConfig,
        m: &mut MeasuringOracle,
        start: Option<&Candidate>,
    ) -> Result<Option<Candidate>, OracleError> {
        let base = m.accuracy(&CompressionPoint::uncompressed(enc))?;
        if base < a0 {
            return Ok(start.cloned());
        }
        // The fastest uncompressed split may send the input or a whole cut in a lossy `enc`: it
        // is the incumbent only if that measures up too (end-only always does, at `base`).
        let Some(mut inc) = self.fastest_uncompressed(enc, a0, config.reuse, m)? else {
            return Ok(start.cloned());
        };
        if let Some(s) = start.filter(|s| s.latency_ms < inc.latency_ms) {
            inc = s.clone();
        }
        if !config.prune {
            return Ok(Some(inc));
        }
        let model = self.model(enc);
        let lins: Vec<LinearLatency> = self.layouts.iter().map(|l| model.linear(l)).collect();
        // CRS: visit deployments by the latency of their most compressed plan; once that cannot
        // beat the incumbent, neither can any later one.
        let floor = |i: usize| lins[i].at(&vec![1; lins[i].slope_ms.len()]);
        let mut order: Vec<usize> = (0..self.layouts.len())
            .filter(|&i| !self.layouts[i].cuts.is_empty())
            .collect();
        order.sort_by(|&a, &b| floor(a).total_cmp(&floor(b)));
        for i in order {
            if floor(i) >= inc.latency_ms - EPS {
                break;
            }
            match self.layouts[i].cuts.len() {
                1 => self.refine_single(i, &lins[i], enc, base, a0, config, m, &mut inc)?,
                2 => self.refine_pair(i, &lins[i], enc, base, a0, config, m, &mut inc)?,
                _ => {} // three or more cuts need four or more tiers: not searched yet
            }
        }
        Ok(Some(inc))
    }

    #[allow(clippy::too_many_arguments)]
    fn refine_single(
        &self,
        i: usize,
        lin: &LinearLatency,
        enc: WireEncoding,
        base: f64,
        a0: f64,
        config: &SearchConfig,
        m: &mut MeasuringOracle,
        inc: &mut Candidate,
    ) -> Result<(), OracleError> {
        let cut = self.layouts[i].cuts[0];
        let channels = self.profile.cuts[cut].channels;
        let s = lin.slope_ms[0];
        let limit = cap(lin.fixed_ms, s, inc.latency_ms, channels);
        if limit == 0 {
            return Ok(());
        }
        let tol = config.tolerance;
        let done = |lo: u32, hi: u32| s * f64::from(hi - lo - 1) <= tol * lin.at(&[hi]);
        let (_, hi) = self.bracket(m, cut, enc, base, a0, limit, config.reuse, &done)?;
        self.offer(i, vec![hi], lin, enc, a0, config.reuse, m, inc)
    }

    /// Makes `kept` the incumbent if it is faster and meets the floor: measured, or (with
    /// `reuse`) bounded from below by a point it dominates, which saves measuring incumbents
    /// that a later one replaces (the plan returned is measured in full: `Planner::judged`).
    #[allow(clippy::too_many_arguments)]
    fn offer(
        &self,
        i: usize,
        kept: Vec<u32>,
        lin: &LinearLatency,
        enc: WireEncoding,
        a0: f64,
        reuse: bool,
        m: &mut MeasuringOracle,
        inc: &mut Candidate,
    ) -> Result<(), OracleError> {
        let latency_ms = lin.at(&kept);
        if latency_ms >= inc.latency_ms - EPS {
            return Ok(());
        }
        let p = self.point(i, &kept, enc);
        let accuracy = m.value_against(&p, a0, reuse)?;
        if accuracy >= a0 {
            *inc = Candidate {
                layout: i,
                kept,
                encoding: enc,
                latency_ms,
                accuracy: Some(accuracy),
            };
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn refine_pair(
        &self,
        i: usize,
        lin: &LinearLatency,
        enc: WireEncoding,
        base: f64,
        a0: f64,
        config: &SearchConfig,
        m: &mut MeasuringOracle,
        inc: &mut Candidate,
    ) -> Result<(), OracleError> {
        let cuts = self.layouts[i].cuts.clone();
        let ch = [
            self.profile.cuts[cuts[0]].channels,
            self.profile.cuts[cuts[1]].channels,
        ];
        let (s1, s2) = (lin.slope_ms[0], lin.slope_ms[1]);
        let tol = config.tolerance;
        // Monotonicity: a two-cut point is no more accurate than either of its single cuts, so
        // each cut needs at least its single-cut threshold. Find those first (they are shared
        // with every other deployment that cuts there).
        let limit1 = cap(lin.fixed_ms + s2, s1, inc.latency_ms, ch[0]);
        if limit1 == 0 {
            return Ok(());
        }
        let done1 = |lo: u32, hi: u32| s1 * f64::from(hi - lo - 1) <= tol * inc.latency_ms;
        let (lo1, hi1) = self.bracket(m, cuts[0], enc, base, a0, limit1, config.reuse, &done1)?;
        if lo1 >= limit1 {
            return Ok(());
        }
        let limit2 = cap(
            lin.fixed_ms + s1 * f64::from(lo1 + 1),
            s2,
            inc.latency_ms,
            ch[1],
        );
        if limit2 == 0 {
            return Ok(());
        }
        let done2 = |lo: u32, hi: u32| s2 * f64::from(hi - lo - 1) <= tol * inc.latency_ms;
        let (lo2, hi2) = self.bracket(m, cuts[1], enc, base, a0, limit2, config.reuse, &done2)?;
        if lo2 >= limit2 {
            return Ok(());
        }
        // Pruning one cut alone is a plan of this deployment too, already measured.
        self.offer(i, vec![hi1, ch[1]], lin, enc, a0, config.reuse, m, inc)?;
        self.offer(i, vec![ch[0], hi2], lin, enc, a0, config.reuse, m, inc)?;
        // Joint points: estimate by composing the single-cut curves (losses compound), scaled by
        // what the nearest measured joint point says of that composition; measure the fastest
        // point whose estimate reaches a0, and repeat.
        for _ in 0..config.max_joint_probes {
            let c1 = Curve::of(m, cuts[0], ch[0], enc, base, config.reuse);
            let c2 = Curve::of(m, cuts[1], ch[1], enc, base, config.reuse);
            let (e1, e2) = (c1.estimates(), c2.estimates());
            let (u1, u2) = (c1.upper_bounds(), c2.upper_bounds());
            // Joint points of this deployment's cuts: measured in this encoding (estimates and
            // ceilings), in a finer one (ceilings) or a coarser one (floors), with `reuse`.
            let (mut joint, mut caps, mut floors) = (Vec::new(), Vec::new(), Vec::new());
            for (p, a) in m.values() {
                let ours = !p.input
                    && p.cuts.len() == 2
                    && p.cuts[0].cut == cuts[0]
                    && p.cuts[1].cut == cuts[1];
                if !ours {
                    continue;
                }
                let q = (p.cuts[0].kept, p.cuts[1].kept, a);
                match p.encoding.bits().cmp(&enc.bits()) {
                    std::cmp::Ordering::Equal => {
                        joint.push(q);
                        caps.push(q);
                    }
                    std::cmp::Ordering::Greater if config.reuse => caps.push(q),
                    std::cmp::Ordering::Less if config.reuse => floors.push(q),
                    _ => {}
                }
            }
            let compose = |k1: u32, k2: u32| e1[k1 as usize] * e2[k2 as usize] / base;
            // The composition is a guess until a joint point calibrates it; after that, a point
            // estimated below the floor is one a measurement would most likely reject, and
            // probing it crawls along the frontier a channel at a time.
            let margin = if joint.is_empty() { JOINT_MARGIN } else { 0.0 };
            let mut best: Option<(f64, u32, u32)> = None;
            for k1 in (lo1 + 1)..ch[0] {
                let room = cap(
                    lin.fixed_ms + s1 * f64::from(k1),
                    s2,
                    inc.latency_ms,
                    ch[1] - 1,
                );
                for k2 in (lo2 + 1)..=room {
                    let t = lin.at(&[k1, k2]);
                    if best.is_some_and(|b| b.0 <= t) {
                        continue;
                    }
                    let mut ub = u1[k1 as usize].min(u2[k2 as usize]);
                    for &(j1, j2, a) in &caps {
                        if j1 >= k1 && j2 >= k2 {
                            ub = ub.min(a);
                        }
                    }
                    let mut scale = 1.0;
                    let mut nearest = f64::INFINITY;
                    let mut measured = false;
                    for &(j1, j2, a) in &joint {
                        measured |= j1 == k1 && j2 == k2;
                        let d = (f64::from(j1) - f64::from(k1)).abs() / f64::from(ch[0])
                            + (f64::from(j2) - f64::from(k2)).abs() / f64::from(ch[1]);
                        let c = compose(j1, j2);
                        if d < nearest && c > 0.0 {
                            nearest = d;
                            scale = a / c;
                        }
                    }
                    if measured || ub < a0 {
                        continue;
                    }
                    let floor = floors
                        .iter()
                        .filter(|&&(j1, j2, _)| j1 <= k1 && j2 <= k2)
                        .map(|q| q.2)
                        .fold(0.0f64, f64::max);
                    let est = (compose(k1, k2) * scale).min(ub).max(floor);
                    if est >= a0 - margin {
                        best = Some((t, k1, k2));
                    }
                }
            }
            let Some((_, k1, k2)) = best else { break };
            let before = m.calls;
            self.offer(i, vec![k1, k2], lin, enc, a0, config.reuse, m, inc)?;
            if m.calls == before && !inc.kept.eq(&[k1, k2]) {
                // Nothing measured and nothing taken: another probe would pick it again.
                break;
            }
        }
        Ok(())
    }

    /// T0: the most accurate plan within `t0` ms. The fastest plan reaching accuracy A only gets
    /// slower as A rises, so this bisects on A with the A0 search, starting from the best plan
    /// a few estimate-guided probes of the latency frontier find. Every A0 search reuses the
    /// points the earlier ones measured.
    pub(crate) fn max_accuracy(
        &self,
        enc: WireEncoding,
        t0: f64,
        config: &SearchConfig,
        m: &mut MeasuringOracle,
    ) -> Result<Option<Candidate>, OracleError> {
        let base = m.accuracy(&CompressionPoint::uncompressed(enc))?;
        let within: Vec<Candidate> = self
            .uncompressed_by_latency(enc)
            .into_iter()
            .filter(|c| c.latency_ms <= t0)
            .collect();
        let unmodified = |c: &&Candidate| self.point(c.layout, &c.kept, enc).is_unmodified();
        if let Some(c) = within.iter().find(unmodified) {
            // Nothing compressed is more accurate than the unmodified model.
            return Ok(Some(Candidate {
                accuracy: Some(base),
                ..c.clone()
            }));
        }
        // Only splits that send something in a lossy `enc` fit: the fastest, measured, is one
        // answer (the frontier probes below reach the others' whole cuts too).
        let mut lossy = match within.into_iter().next() {
            Some(mut c) => {
                c.accuracy = Some(m.accuracy(&self.point(c.layout, &c.kept, enc))?);
                Some(c)
            }
            None => None,
        };
        if !config.prune {
            return Ok(lossy);
        }
        let mut best = self.frontier_probe(enc, t0, base, config.max_joint_probes, m)?;
        if lossy.as_ref().and_then(|c| c.accuracy) > best.as_ref().and_then(|c| c.accuracy) {
            best = lossy.take();
        }
        let mut lo = best.as_ref().and_then(|c| c.accuracy).unwrap_or(0.0);
        let mut hi = base;
        for _ in 0..16 {
            if hi - lo <= ACCURACY_TOLERANCE {
                break;
            }
            let mid = (lo + hi) / 2.0;
            match self.min_latency(enc, mid, config, m, None)? {
                Some(c) if c.latency_ms <= t0 => {
                    lo = c.accuracy.unwrap_or(mid).max(mid);
                    best = Some(c);
                }
                _ => hi = mid,
            }
        }
        Ok(best)
    }

    /// A first T0 answer: per deployment, the plans that keep as many channels as `t0` allows;
    /// measure the ones the single-cut curves (CAE) rate highest.
    fn frontier_probe(
        &self,
        enc: WireEncoding,
        t0: f64,
        base: f64,
        probes: usize,
        m: &mut MeasuringOracle,
    ) -> Result<Option<Candidate>, OracleError> {
        let model = self.model(enc);
        let mut frontier: Vec<(usize, Vec<u32>, f64)> = Vec::new();
        for (i, l) in self.layouts.iter().enumerate() {
            let lin = model.linear(l);
            match self.channels(l).as_slice() {
                [c] => {
                    let k = cap(lin.fixed_ms, lin.slope_ms[0], t0 + 2.0 * EPS, *c);
                    if k > 0 {
                        frontier.push((i, vec![k], lin.at(&[k])));
                    }
                }
                [c1, c2] => {
                    for k1 in 1..=*c1 {
                        let base_ms = lin.fixed_ms + lin.slope_ms[0] * f64::from(k1);
                        let k2 = cap(base_ms, lin.slope_ms[1], t0 + 2.0 * EPS, *c2);
                        if k2 > 0 {
                            frontier.push((i, vec![k1, k2], lin.at(&[k1, k2])));
                        }
                    }
                }
                _ => {}
            }
        }
        let mut inc: Option<Candidate> = None;
        for _ in 0..probes {
            let floor = inc.as_ref().and_then(|c| c.accuracy).unwrap_or(-1.0);
            let mut best: Option<(f64, usize)> = None;
            for (j, (i, kept, _)) in frontier.iter().enumerate() {
                let p = self.point(*i, kept, enc);
                if m.known_value(&p).is_some() {
                    continue;
                }
                let ub = m.upper_bound(&p).unwrap_or(1.0);
                let est = p
                    .cuts
                    .iter()
                    .map(|c| {
                        let curve = Curve::of(m, c.cut, c.channels, enc, base, false);
                        curve.estimates()[c.kept as usize] / base
                    })
                    .product::<f64>()
                    * base;
                let score = est.min(ub);
                if ub > floor + EPS && best.is_none_or(|b| score > b.0) {
                    best = Some((score, j));
                }
            }
            let Some((_, j)) = best else { break };
            let (i, kept, t) = frontier[j].clone();
            let a = m.accuracy(&self.point(i, &kept, enc))?;
            if a > floor || inc.as_ref().is_some_and(|c| a == floor && t < c.latency_ms) {
                inc = Some(Candidate {
                    layout: i,
                    kept,
                    encoding: enc,
                    latency_ms: t,
                    accuracy: Some(a),
                });
            }
        }
        Ok(inc)
    }
}
