//! Exact MIG placement across the host's MIG GPUs.
//!
//! The problem splits in two levels, and each level is searched exactly:
//!
//! - **One GPU** (`solve_gpu`): does a multiset of profiles fit beside what
//!   the GPU already holds? Backtracking over placements, largest profile
//!   first, memoising failed `(item, occupied slices, claimed instances)`
//!   states. A GPU has at most a few dozen placements, so this is
//!   microseconds; answers are cached per `(GPU, multiset)` for the whole
//!   plan.
//! - **Across GPUs** (`Search`): how many of each profile each GPU takes.
//!   GPUs are visited in index order and each takes a *maximal* share of
//!   the demand still open (exact, because a subset of a layout is a
//!   layout); the open demand after each GPU is the whole state and is
//!   memoised on failure, interchangeable GPUs share one-GPU answers, and
//!   capacity bounds (instance limits per profile, compute and memory
//!   slices per set of GPUs offering a profile) cut branches early.
//!
//! Requests arrive one at a time in priority order (`try_add`). The cheap
//! path puts the request on one GPU without moving anything else between
//! GPUs; only when that fails does the full search re-place every new
//! request. Because the accepted set only grows, a profile that failed once
//! fails again, so each profile pays for at most one failed full search.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::gpu::{MigProfileName, ReplicaKey};

/// Nodes one cross-GPU search may visit. Never reached by any fleet this
/// product targets (≤ 16 GPUs); it exists so that a pathological inventory
/// cannot stall the daemon. Reaching it counts as "does not fit" and the
/// planner says so in a note.
const SEARCH_BUDGET: u64 = 1_000_000;

/// A GPU-instance profile as the search sees it.
#[derive(Debug, Clone)]
pub(super) struct Prof {
    pub name: MigProfileName,
    pub id: u32,
    pub compute: u8,
    pub mem: u8,
    pub max: u8,
    /// Valid placement starts (those that fit inside the GPU).
    pub placements: Vec<u8>,
}

/// Who holds an instance that the search may not move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum FixedHolder {
    /// A running replica whose assignment is kept.
    Replica(ReplicaKey),
    /// An instance that is not ours and whose profile is not offered, so it
    /// can be neither used nor removed.
    Foreign { gi_id: u32 },
}

/// An instance that stays where it is.
#[derive(Debug, Clone)]
pub(super) struct FixedInst {
    pub profile: Option<usize>,
    pub start: u8,
    pub size: u8,
    pub compute: u8,
    pub holder: FixedHolder,
}

/// An existing instance nobody uses: either not ours (it stays, and may be
/// given to a request of its profile) or ours (free space, reused when a
/// request lands exactly on it).
#[derive(Debug, Clone)]
pub(super) struct FreeInst {
    pub profile: usize,
    pub start: u8,
    pub gi_id: u32,
    /// Index into the GPU's inventory instance list.
    pub inventory: usize,
}

/// One MIG GPU the planner may place new instances on.
#[derive(Debug, Clone)]
pub(super) struct EngineGpu {
    /// Position of the GPU in the planner's (index-sorted) GPU list.
    pub pos: usize,
    /// The product name: GPUs of one model with equal contents are
    /// interchangeable.
    pub model: String,
    pub memory_slices: u8,
    pub compute_slices: u8,
    pub profiles: Vec<Prof>,
    pub fixed: Vec<FixedInst>,
    pub foreign: Vec<FreeInst>,
    pub owned_free: Vec<FreeInst>,
}

/// Where a planned instance comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// An existing instance that is not ours (index into `foreign`).
    Foreign(usize),
    /// An existing instance of ours that nobody used (index into `owned_free`).
    Owned(usize),
    /// A new instance.
    Create,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Placed {
    pub profile: usize,
    pub start: u8,
    pub source: Source,
}

/// One new request's final place.
#[derive(Debug, Clone)]
pub(super) struct Planned {
    pub req: usize,
    pub pos: usize,
    pub profile: usize,
    pub start: u8,
    /// The existing instance used, as an index into the GPU's inventory list.
    pub inventory: Option<usize>,
}

/// Who holds an instance, for explaining a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Holder {
    Replica(ReplicaKey),
    New(usize),
    Foreign { gi_id: u32 },
}

/// Why a profile does not fit on one GPU as planned.
#[derive(Debug, Clone)]
pub(super) enum Shortfall {
    MaxInstances {
        max: u8,
    },
    Compute {
        used: u8,
        total: u8,
        needed: u8,
    },
    NoPlacement {
        /// `(profile name, placement start, holder)`, by start.
        occupants: Vec<(String, u8, Holder)>,
    },
}

/// FxHash (as in rustc): the caches hash short byte strings millions of
/// times, where SipHash's resistance to flooding buys nothing. Deterministic,
/// and the maps are never iterated.
#[derive(Debug, Default, Clone, Copy)]
struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;
type FastSet<K> = HashSet<K, BuildHasherDefault<FxHasher>>;

fn range_mask(start: u8, size: u8) -> u64 {
    let (s, n) = (u32::from(start), u32::from(size));
    if n == 0 || s + n > 64 {
        return 0;
    }
    let ones = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
    ones << s
}

type GpuSignature = (
    String,
    u8,
    u8,
    Vec<(u32, u8, u8, u8, Vec<u8>)>,
    Vec<(u8, u8, u8, Option<usize>)>,
);

/// Derived, immutable facts about one engine GPU.
#[derive(Debug)]
struct GpuCtx {
    g: EngineGpu,
    /// Mask per profile per valid placement (parallel to `Prof::placements`).
    masks: Vec<Vec<u64>>,
    /// Every (mask, weight) pair of the GPU, to score how much a new
    /// instance blocks.
    all: Vec<(u64, u32)>,
    /// Occupied by fixed and foreign instances.
    base_occ: u64,
    base_compute: u32,
    base_counts: Vec<u32>,
    /// Capacities for new requests, treating foreign instances as usable.
    cap_compute: u32,
    cap_mem: u32,
    cap_count: Vec<u32>,
    /// Interchangeability class.
    sym: usize,
}

impl GpuCtx {
    fn new(g: EngineGpu) -> Self {
        let masks: Vec<Vec<u64>> = g
            .profiles
            .iter()
            .map(|p| p.placements.iter().map(|&s| range_mask(s, p.mem)).collect())
            .collect();
        let all = g
            .profiles
            .iter()
            .zip(&masks)
            .flat_map(|(p, ms)| ms.iter().map(move |&m| (m, u32::from(p.mem))))
            .collect();
        let n = g.profiles.len();
        let mut fixed_occ = 0u64;
        let mut fixed_compute = 0u32;
        let mut fixed_counts = vec![0u32; n];
        for f in &g.fixed {
            fixed_occ |= range_mask(f.start, f.size);
            fixed_compute += u32::from(f.compute);
            if let Some(p) = f.profile {
                fixed_counts[p] += 1;
            }
        }
        let mut base_occ = fixed_occ;
        let mut base_compute = fixed_compute;
        let mut base_counts = fixed_counts.clone();
        for f in &g.foreign {
            let p = &g.profiles[f.profile];
            base_occ |= range_mask(f.start, p.mem);
            base_compute += u32::from(p.compute);
            base_counts[f.profile] += 1;
        }
        let cap_compute = u32::from(g.compute_slices).saturating_sub(fixed_compute);
        let cap_mem = u32::from(g.memory_slices).saturating_sub(fixed_occ.count_ones());
        let cap_count = g
            .profiles
            .iter()
            .zip(&fixed_counts)
            .map(|(p, &c)| u32::from(p.max).saturating_sub(c))
            .collect();
        GpuCtx {
            g,
            masks,
            all,
            base_occ,
            base_compute,
            base_counts,
            cap_compute,
            cap_mem,
            cap_count,
            sym: 0,
        }
    }

    /// What decides whether two GPUs are interchangeable for the search:
    /// model, geometry, profiles and what already sits where. Our unused
    /// instances are left out: they are free space and only sway which
    /// place is preferred, never whether something fits.
    fn signature(&self) -> GpuSignature {
        let profiles = self
            .g
            .profiles
            .iter()
            .map(|p| (p.id, p.compute, p.mem, p.max, p.placements.clone()))
            .collect();
        let mut contents: Vec<(u8, u8, u8, Option<usize>)> = self
            .g
            .fixed
            .iter()
            .map(|f| (f.start, f.size, f.compute, None))
            .chain(self.g.foreign.iter().map(|f| {
                let p = &self.g.profiles[f.profile];
                (f.start, p.mem, p.compute, Some(f.profile))
            }))
            .collect();
        contents.sort_unstable();
        (
            self.g.model.clone(),
            self.g.memory_slices,
            self.g.compute_slices,
            profiles,
            contents,
        )
    }

    /// How much of the GPU's remaining flexibility an instance at `mask`
    /// takes away: the placements it newly blocks, weighted by their size.
    /// Small instances therefore go where they block little (the high end
    /// of an A100), keeping the low placements for the big profiles.
    fn damage(&self, occ: u64, mask: u64) -> u32 {
        self.all
            .iter()
            .filter(|(m, _)| m & occ == 0 && m & mask != 0)
            .map(|(_, w)| w)
            .sum()
    }
}

/// Backtracking state of the one-GPU solver.
struct GpuSolve<'a> {
    ctx: &'a GpuCtx,
    items: Vec<usize>,
    occ: u64,
    compute: u32,
    counts: Vec<u32>,
    claimed: u64,
    path: Vec<Placed>,
    failed: FastSet<(usize, u64, u64)>,
}

impl GpuSolve<'_> {
    fn dfs(&mut self, i: usize) -> bool {
        let Some(&p) = self.items.get(i) else {
            return true;
        };
        // The profiles of items 0..i are fixed by the item order, so occupied
        // slices and claimed instances determine compute and counts too.
        let key = (i, self.occ, self.claimed);
        if self.failed.contains(&key) {
            return false;
        }
        let ctx = self.ctx;
        let prof = &ctx.g.profiles[p];
        // (class, damage, start, source): existing instances first, so that
        // an operator's layout and our own leftovers are used before anything
        // is created.
        let mut options: Vec<(u8, u32, u8, Source)> = Vec::new();
        for (fi, f) in ctx.g.foreign.iter().enumerate() {
            if f.profile == p && fi < 64 && self.claimed & (1 << fi) == 0 {
                options.push((0, 0, f.start, Source::Foreign(fi)));
            }
        }
        let room = self.counts[p] < u32::from(prof.max)
            && self.compute + u32::from(prof.compute) <= u32::from(ctx.g.compute_slices);
        if room {
            for (oi, o) in ctx.g.owned_free.iter().enumerate() {
                if o.profile == p && range_mask(o.start, prof.mem) & self.occ == 0 {
                    options.push((1, 0, o.start, Source::Owned(oi)));
                }
            }
            for (k, &s) in prof.placements.iter().enumerate() {
                let m = ctx.masks[p][k];
                let reused = options
                    .iter()
                    .any(|o| o.0 == 1 && o.2 == s && matches!(o.3, Source::Owned(_)));
                if m & self.occ == 0 && !reused {
                    options.push((2, ctx.damage(self.occ, m), s, Source::Create));
                }
            }
        }
        options.sort_by_key(|o| (o.0, o.1, o.2));
        for (_, _, start, source) in options {
            let (occ, compute, claimed, counts) =
                (self.occ, self.compute, self.claimed, self.counts[p]);
            match source {
                Source::Foreign(fi) => self.claimed |= 1 << fi,
                Source::Owned(_) | Source::Create => {
                    self.occ |= range_mask(start, prof.mem);
                    self.compute += u32::from(prof.compute);
                    self.counts[p] += 1;
                }
            }
            self.path.push(Placed {
                profile: p,
                start,
                source,
            });
            if self.dfs(i + 1) {
                return true;
            }
            self.path.pop();
            (self.occ, self.compute, self.claimed, self.counts[p]) =
                (occ, compute, claimed, counts);
        }
        self.failed.insert(key);
        false
    }
}

/// Places `counts[p]` new instances of each profile `p` on the GPU, beside
/// its fixed and foreign instances. Items come back largest first; items of
/// one profile in the order the solver preferred their places.
fn solve_gpu(ctx: &GpuCtx, counts: &[u8]) -> Option<Vec<Placed>> {
    let mut items: Vec<usize> = counts
        .iter()
        .enumerate()
        .flat_map(|(p, &n)| std::iter::repeat_n(p, usize::from(n)))
        .collect();
    items.sort_by_key(|&p| {
        let prof = &ctx.g.profiles[p];
        (Reverse(prof.mem), Reverse(prof.compute), p)
    });
    let mut s = GpuSolve {
        ctx,
        items,
        occ: ctx.base_occ,
        compute: ctx.base_compute,
        counts: ctx.base_counts.clone(),
        claimed: 0,
        path: Vec::new(),
        failed: FastSet::default(),
    };
    s.dfs(0).then_some(s.path)
}

/// The MIG half of one plan: GPUs, the requests accepted so far, caches.
#[derive(Debug)]
pub(super) struct MigEngine {
    gpus: Vec<GpuCtx>,
    /// Which GPUs offer a profile name, and as which local profile, in the
    /// order they are tried: GPUs with an unused instance of it first.
    offers: BTreeMap<MigProfileName, Vec<(usize, usize)>>,
    /// One-GPU answers, by `(interchangeability class, multiset)`, and the
    /// layouts behind them by `(engine GPU, multiset)`. Caches only: never
    /// iterated, so their order cannot reach the plan.
    fit: FastMap<(usize, Vec<u8>), bool>,
    witnesses: FastMap<(usize, Vec<u8>), Vec<Placed>>,
    assigned: Vec<Vec<(usize, usize)>>,
    counts: Vec<Vec<u8>>,
    failed: Vec<MigProfileName>,
    /// Requests whose search hit the budget.
    cut_short: Vec<usize>,
    /// Bumped whenever the accepted set changes, so callers can cache
    /// what they derive from the layout.
    generation: u64,
}

impl MigEngine {
    pub(super) fn new(gpus: Vec<EngineGpu>) -> Self {
        let mut ctxs: Vec<GpuCtx> = gpus.into_iter().map(GpuCtx::new).collect();
        let mut sigs = Vec::new();
        for c in &mut ctxs {
            let sig = c.signature();
            c.sym = match sigs.iter().position(|s| *s == sig) {
                Some(i) => i,
                None => {
                    sigs.push(sig);
                    sigs.len() - 1
                }
            };
        }
        let mut offers: BTreeMap<MigProfileName, Vec<(u8, usize, usize)>> = BTreeMap::new();
        for (e, c) in ctxs.iter().enumerate() {
            for (p, prof) in c.g.profiles.iter().enumerate() {
                let rank = if c.g.foreign.iter().any(|f| f.profile == p) {
                    0
                } else if c.g.owned_free.iter().any(|f| f.profile == p) {
                    1
                } else {
                    2
                };
                offers
                    .entry(prof.name.clone())
                    .or_default()
                    .push((rank, e, p));
            }
        }
        let offers = offers
            .into_iter()
            .map(|(name, mut v)| {
                v.sort_unstable();
                (name, v.into_iter().map(|(_, e, p)| (e, p)).collect())
            })
            .collect();
        let n = ctxs.len();
        let counts = ctxs.iter().map(|c| vec![0; c.g.profiles.len()]).collect();
        MigEngine {
            gpus: ctxs,
            offers,
            fit: FastMap::default(),
            witnesses: FastMap::default(),
            assigned: vec![Vec::new(); n],
            counts,
            failed: Vec::new(),
            cut_short: Vec::new(),
            generation: 0,
        }
    }

    /// Does this multiset fit on engine GPU `e`? Interchangeable GPUs
    /// share answers.
    fn fits(&mut self, e: usize, counts: &[u8]) -> bool {
        let key = (self.gpus[e].sym, counts.to_vec());
        if let Some(&answer) = self.fit.get(&key) {
            return answer;
        }
        let answer = solve_gpu(&self.gpus[e], counts).is_some();
        self.fit.insert(key, answer);
        answer
    }

    /// The layout of GPU `e` as planned now.
    fn witness(&mut self, e: usize) -> Vec<Placed> {
        let key = (e, self.counts[e].clone());
        if let Some(w) = self.witnesses.get(&key) {
            return w.clone();
        }
        let w = solve_gpu(&self.gpus[e], &key.1).unwrap_or_default();
        self.witnesses.insert(key, w.clone());
        w
    }

    /// Changes whenever a request is accepted.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Requests whose search was cut short by the budget.
    pub(super) fn cut_short(&self) -> &[usize] {
        &self.cut_short
    }

    /// Accepts request `req` for `name` if it fits together with every
    /// request accepted before; otherwise leaves the state as it was.
    pub(super) fn try_add(&mut self, req: usize, name: &MigProfileName) -> bool {
        if self.failed.contains(name) {
            return false;
        }
        let offers = self.offers.get(name).cloned().unwrap_or_default();
        if offers.is_empty() {
            return false;
        }
        for &(e, p) in &offers {
            if u32::from(self.counts[e][p]) >= self.gpus[e].cap_count[p] {
                continue;
            }
            let mut counts = self.counts[e].clone();
            counts[p] += 1;
            if self.fits(e, &counts) {
                self.counts[e] = counts;
                self.assigned[e].push((req, p));
                self.generation += 1;
                return true;
            }
        }
        // Moving other new requests between GPUs can only help when there
        // is more than one GPU and something to move.
        let movable = self.assigned.iter().any(|a| !a.is_empty());
        if self.gpus.len() < 2 || !movable {
            self.failed.push(name.clone());
            return false;
        }
        // The demand: every accepted request plus this one, by name.
        let mut names: Vec<MigProfileName> = Vec::new();
        let mut reqs: Vec<(usize, usize)> = Vec::new();
        let name_id = |names: &mut Vec<MigProfileName>, n: &MigProfileName| {
            names.iter().position(|x| x == n).unwrap_or_else(|| {
                names.push(n.clone());
                names.len() - 1
            })
        };
        for (e, a) in self.assigned.iter().enumerate() {
            for &(r, p) in a {
                let n = name_id(&mut names, &self.gpus[e].g.profiles[p].name);
                reqs.push((r, n));
            }
        }
        let n = name_id(&mut names, name);
        reqs.push((req, n));
        reqs.sort_unstable();
        let mut demand = vec![0u16; names.len()];
        for &(_, n) in &reqs {
            demand[n] += 1;
        }
        let mut search = Search::new(self, &names);
        let found = search.dfs(0, &mut demand);
        let (exhausted, chosen, local) = (search.exhausted, search.chosen, search.local);
        if !found {
            if exhausted {
                self.cut_short.push(req);
            }
            self.failed.push(name.clone());
            return false;
        }
        // Requests of one name, in priority order, go to the GPUs that
        // take that name, in index order.
        for (e, a) in self.assigned.iter_mut().enumerate() {
            a.clear();
            self.counts[e].iter_mut().for_each(|c| *c = 0);
            for (n, &take) in chosen[e].iter().enumerate() {
                if let Some(p) = local[e][n] {
                    self.counts[e][p] = take as u8;
                }
            }
        }
        let mut left = chosen;
        for (r, n) in reqs {
            if let Some(e) = (0..left.len()).find(|&e| left[e][n] > 0) {
                left[e][n] -= 1;
                if let Some(p) = local[e][n] {
                    self.assigned[e].push((r, p));
                }
            }
        }
        self.generation += 1;
        true
    }

    /// Why `name` does not fit on the GPU at planner position `pos` as
    /// things stand. `None` when the GPU is not a MIG GPU of this engine or
    /// does not offer the profile.
    pub(super) fn shortfall(&mut self, pos: usize, name: &MigProfileName) -> Option<Shortfall> {
        let e = self.gpus.iter().position(|c| c.g.pos == pos)?;
        let p = self.gpus[e]
            .g
            .profiles
            .iter()
            .position(|p| p.name == *name)?;
        let witness = self.witness(e);
        let ctx = &self.gpus[e];
        let prof = &ctx.g.profiles[p];
        let mut count = ctx.base_counts[p];
        let mut compute = ctx.base_compute;
        for w in &witness {
            if matches!(w.source, Source::Foreign(_)) {
                continue;
            }
            compute += u32::from(ctx.g.profiles[w.profile].compute);
            if w.profile == p {
                count += 1;
            }
        }
        if count >= u32::from(prof.max) {
            return Some(Shortfall::MaxInstances { max: prof.max });
        }
        if compute + u32::from(prof.compute) > u32::from(ctx.g.compute_slices) {
            return Some(Shortfall::Compute {
                used: u8::try_from(compute).unwrap_or(u8::MAX),
                total: ctx.g.compute_slices,
                needed: prof.compute,
            });
        }
        let label = |p: Option<usize>| {
            p.map(|p| ctx.g.profiles[p].name.to_string())
                .unwrap_or_else(|| "unknown profile".to_string())
        };
        let mut occupants: Vec<(String, u8, Holder)> = ctx
            .g
            .fixed
            .iter()
            .map(|f| {
                let holder = match &f.holder {
                    FixedHolder::Replica(r) => Holder::Replica(r.clone()),
                    FixedHolder::Foreign { gi_id } => Holder::Foreign { gi_id: *gi_id },
                };
                (label(f.profile), f.start, holder)
            })
            .collect();
        let reqs = self.requests_by_item(e, &witness);
        let mut claimed = vec![None; ctx.g.foreign.len()];
        for (w, r) in witness.iter().zip(&reqs) {
            match w.source {
                Source::Foreign(fi) => claimed[fi] = Some(*r),
                Source::Owned(_) | Source::Create => {
                    occupants.push((label(Some(w.profile)), w.start, Holder::New(*r)));
                }
            }
        }
        for (f, c) in ctx.g.foreign.iter().zip(claimed) {
            let holder = match c {
                Some(r) => Holder::New(r),
                None => Holder::Foreign { gi_id: f.gi_id },
            };
            occupants.push((label(Some(f.profile)), f.start, holder));
        }
        occupants.sort_by_key(|o| o.1);
        Some(Shortfall::NoPlacement { occupants })
    }

    /// The request that gets each witness item: per profile, requests in
    /// priority order take the places in the order the solver preferred.
    fn requests_by_item(&self, e: usize, witness: &[Placed]) -> Vec<usize> {
        let mut by_profile: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &(r, p) in &self.assigned[e] {
            by_profile.entry(p).or_default().push(r);
        }
        for v in by_profile.values_mut() {
            v.sort_unstable();
            v.reverse();
        }
        witness
            .iter()
            .map(|w| {
                by_profile
                    .get_mut(&w.profile)
                    .and_then(Vec::pop)
                    .unwrap_or(usize::MAX)
            })
            .collect()
    }

    /// The final place of every accepted request.
    pub(super) fn finish(&mut self) -> Vec<Planned> {
        let mut out = Vec::new();
        for e in 0..self.gpus.len() {
            if self.assigned[e].is_empty() {
                continue;
            }
            // INVARIANT: counts[e] was only ever committed after `fits`
            // accepted it, so the witness exists and covers every request.
            let witness = self.witness(e);
            let reqs = self.requests_by_item(e, &witness);
            let g = &self.gpus[e].g;
            for (w, r) in witness.iter().zip(reqs) {
                if r == usize::MAX {
                    continue;
                }
                let inventory = match w.source {
                    Source::Foreign(i) => Some(g.foreign[i].inventory),
                    Source::Owned(i) => Some(g.owned_free[i].inventory),
                    Source::Create => None,
                };
                out.push(Planned {
                    req: r,
                    pos: g.pos,
                    profile: w.profile,
                    start: w.start,
                    inventory,
                });
            }
        }
        out.sort_by_key(|p| p.req);
        out
    }
}

/// Cross-GPU search, GPU by GPU: each GPU in turn takes a maximal
/// sub-multiset of the demand still open, and the rest goes to the GPUs
/// after it.
///
/// Exact because fitting is monotone (a subset of a layout is a layout):
/// if a solution gives GPU `k` a multiset that could take one more open
/// item, moving that item there from a later GPU is still a solution, so
/// only maximal choices need trying. The state after GPU `k` is just the
/// open demand, memoised on failure. On a mixed host this decouples the
/// classes: after the A100s only "how many 1g.10gb are left" matters to
/// the H100s.
struct Search<'a> {
    engine: &'a mut MigEngine,
    /// Per profile name (the demand's dimensions): compute slices, fewest
    /// memory slices on any GPU, offering GPUs as a bit set.
    names: Vec<(u32, u32, u64)>,
    /// Per GPU, per name: the local profile index.
    local: Vec<Vec<Option<usize>>>,
    /// Per GPU: the names it offers, largest first.
    order: Vec<Vec<usize>>,
    /// Distinct offering sets of the names (for the capacity bound).
    sets: Vec<u64>,
    failed: FastSet<(usize, Vec<u16>)>,
    /// Per GPU: how many of each name it takes in the solution.
    chosen: Vec<Vec<u16>>,
    nodes: u64,
    exhausted: bool,
}

impl<'a> Search<'a> {
    fn new(engine: &'a mut MigEngine, names: &[MigProfileName]) -> Self {
        let g = engine.gpus.len();
        let mut local = vec![vec![None; names.len()]; g];
        let mut info = Vec::new();
        for (n, name) in names.iter().enumerate() {
            let (mut set, mut mem) = (0u64, u32::MAX);
            for &(e, p) in engine.offers.get(name).map(Vec::as_slice).unwrap_or(&[]) {
                local[e][n] = Some(p);
                if e < 64 {
                    set |= 1 << e;
                }
                mem = mem.min(u32::from(engine.gpus[e].g.profiles[p].mem));
            }
            let mem = if mem == u32::MAX { 0 } else { mem };
            info.push((u32::from(name.compute_slices), mem, set));
        }
        let order = local
            .iter()
            .map(|l| {
                let mut o: Vec<usize> = (0..names.len()).filter(|&n| l[n].is_some()).collect();
                o.sort_by_key(|&n| {
                    (
                        Reverse(names[n].compute_slices),
                        Reverse(names[n].memory_gb),
                        n,
                    )
                });
                o
            })
            .collect();
        let mut sets: Vec<u64> = info.iter().map(|i| i.2).collect();
        sets.sort_unstable();
        sets.dedup();
        Search {
            engine,
            names: info,
            local,
            order,
            sets,
            failed: FastSet::default(),
            chosen: vec![vec![0; names.len()]; g],
            nodes: 0,
            exhausted: false,
        }
    }

    /// False when the open demand cannot fit on GPUs `k..` whatever is
    /// chosen: per name, instance limits; per offering set, compute and
    /// memory slices of the demand confined to it.
    fn bounds_ok(&self, k: usize, d: &[u16]) -> bool {
        let gpus = &self.engine.gpus;
        for (n, &want) in d.iter().enumerate() {
            if want == 0 {
                continue;
            }
            let cap: u32 = (k..gpus.len())
                .filter_map(|e| self.local[e][n].map(|p| gpus[e].cap_count[p]))
                .sum();
            if u32::from(want) > cap {
                return false;
            }
        }
        if gpus.len() > 64 {
            return true;
        }
        for &set in &self.sets {
            let (mut need_c, mut need_m) = (0u32, 0u32);
            for (n, &want) in d.iter().enumerate() {
                let (c, m, s) = self.names[n];
                if want > 0 && s & !set == 0 {
                    need_c += c * u32::from(want);
                    need_m += m * u32::from(want);
                }
            }
            if need_c == 0 {
                continue;
            }
            let (mut cap_c, mut cap_m) = (0u32, 0u32);
            for (e, ctx) in gpus.iter().enumerate().skip(k) {
                if set & (1 << e) != 0 {
                    cap_c += ctx.cap_compute;
                    cap_m += ctx.cap_mem;
                }
            }
            if need_c > cap_c || need_m > cap_m {
                return false;
            }
        }
        true
    }

    fn dfs(&mut self, k: usize, d: &mut Vec<u16>) -> bool {
        if d.iter().all(|&x| x == 0) {
            return true;
        }
        if k == self.engine.gpus.len() {
            return false;
        }
        self.nodes += 1;
        if self.nodes > SEARCH_BUDGET {
            self.exhausted = true;
            return false;
        }
        if !self.bounds_ok(k, d) {
            return false;
        }
        let key = (k, d.clone());
        if self.failed.contains(&key) {
            return false;
        }
        let dims: Vec<usize> = self.order[k]
            .iter()
            .copied()
            .filter(|&n| d[n] > 0)
            .collect();
        let mut counts = vec![0u8; self.engine.gpus[k].g.profiles.len()];
        let mut pick = vec![0u16; dims.len()];
        if self.choose(k, &dims, 0, &mut counts, &mut pick, d) {
            return true;
        }
        if !self.exhausted {
            self.failed.insert(key);
        }
        false
    }

    /// Enumerates what GPU `k` takes, most first, and recurses on the
    /// choices that are maximal.
    fn choose(
        &mut self,
        k: usize,
        dims: &[usize],
        j: usize,
        counts: &mut Vec<u8>,
        pick: &mut Vec<u16>,
        d: &mut Vec<u16>,
    ) -> bool {
        if j == dims.len() {
            for (i, &n) in dims.iter().enumerate() {
                let Some(p) = self.local[k][n] else { continue };
                if pick[i] < d[n] && u32::from(counts[p]) < self.engine.gpus[k].cap_count[p] {
                    counts[p] += 1;
                    let more = self.engine.fits(k, counts);
                    counts[p] -= 1;
                    if more {
                        return false;
                    }
                }
            }
            for (i, &n) in dims.iter().enumerate() {
                d[n] -= pick[i];
                self.chosen[k][n] = pick[i];
            }
            if self.dfs(k + 1, d) {
                return true;
            }
            for (i, &n) in dims.iter().enumerate() {
                d[n] += pick[i];
                self.chosen[k][n] = 0;
            }
            return false;
        }
        let n = dims[j];
        let Some(p) = self.local[k][n] else {
            return false;
        };
        let cap = self.engine.gpus[k].cap_count[p].min(u32::from(u8::MAX));
        let most = u32::from(d[n]).min(cap);
        let mut fitted = false;
        for c in (0..=most).rev() {
            counts[p] = c as u8;
            // Fitting is monotone: once `c` fits, every smaller count does.
            if c > 0 && !fitted && !self.engine.fits(k, counts) {
                continue;
            }
            fitted = true;
            pick[j] = c as u16;
            if self.choose(k, dims, j + 1, counts, pick, d) {
                return true;
            }
            if self.exhausted {
                break;
            }
        }
        counts[p] = 0;
        pick[j] = 0;
        false
    }
}
