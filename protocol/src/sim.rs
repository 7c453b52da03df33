//! Deterministic models of a bad link, for tests, benchmarks and the simulator.
//!
//! A [`LinkModel`] takes the frames put on air and returns what arrives: some lost (i.i.d. or
//! in Gilbert–Elliott bursts), some with bytes flipped, some twice, in a shuffled order within
//! a window. Everything is driven by a caller-supplied seed through [`Rng`]
//! (xoshiro256\*\* seeded by SplitMix64, written out here so the sequence never changes with a
//! dependency update): the same seed and input give the same output on every machine.
//! Probabilities are converted once to 32-bit integer thresholds, so no floating point is
//! involved per frame.

/// xoshiro256\*\* (Blackman & Vigna), seeded through SplitMix64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut split = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Rng {
            s: [split(), split(), split(), split()],
        }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `0..n` (0 if `n == 0`), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: Prob) -> bool {
        p.0 != 0 && u64::from(self.next_u32()) < p.0
    }
}

/// A probability as a threshold over 32 random bits (`p * 2^32`, clamped to `0..=2^32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prob(u64);

impl Prob {
    /// Never.
    pub const ZERO: Prob = Prob(0);
    /// Always.
    pub const ONE: Prob = Prob(1 << 32);

    /// From a float in `[0, 1]` (NaN and values outside are clamped; NaN is 0).
    pub fn new(p: f64) -> Prob {
        if p.is_nan() || p <= 0.0 {
            Prob::ZERO
        } else if p >= 1.0 {
            Prob::ONE
        } else {
            Prob((p * 4_294_967_296.0) as u64)
        }
    }
}

/// How frames are lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Nothing lost.
    None,
    /// Each frame lost independently.
    Iid(Prob),
    /// Two-state Markov chain (Gilbert–Elliott): state changes before each frame, then the
    /// frame is lost with the state's loss probability.
    GilbertElliott {
        /// Good → bad per frame.
        to_bad: Prob,
        /// Bad → good per frame; the mean time in bad is `1 / to_good` frames.
        to_good: Prob,
        /// Loss in the good state.
        loss_good: Prob,
        /// Loss in the bad state.
        loss_bad: Prob,
    },
}

impl Loss {
    /// I.i.d. loss with probability `p`.
    pub fn iid(p: f64) -> Loss {
        Loss::Iid(Prob::new(p))
    }

    /// Bursts: the bad state loses everything, the good state nothing; the long-run loss
    /// rate is `loss` and a burst lasts `mean_burst` frames on average (`mean_burst >= 1`).
    pub fn bursts(loss: f64, mean_burst: f64) -> Loss {
        let loss = loss.clamp(0.0, 0.999_999);
        let to_good = 1.0 / mean_burst.max(1.0);
        // Stationary P(bad) = to_bad / (to_bad + to_good) = loss.
        let to_bad = loss * to_good / (1.0 - loss);
        Loss::GilbertElliott {
            to_bad: Prob::new(to_bad),
            to_good: Prob::new(to_good),
            loss_good: Prob::ZERO,
            loss_bad: Prob::ONE,
        }
    }
}

/// What a [`LinkModel`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Frames put on air.
    pub sent: u64,
    /// Bytes put on air.
    pub sent_bytes: u64,
    /// Frames lost.
    pub lost: u64,
    /// Frames with bytes flipped.
    pub corrupted: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Frames delivered (including copies).
    pub delivered: u64,
}

/// A lossy, corrupting, duplicating, reordering link. Pure: [`transmit`](Self::transmit)
/// maps frames to delivered frames, deterministically from the seed.
#[derive(Debug, Clone)]
pub struct LinkModel {
    rng: Rng,
    loss: Loss,
    bad: bool,
    corrupt: Prob,
    corrupt_max_bytes: u32,
    duplicate: Prob,
    reorder_window: usize,
    stats: LinkStats,
}

impl LinkModel {
    /// A perfect link; add impairments with the builder methods.
    pub fn new(seed: u64) -> LinkModel {
        LinkModel {
            rng: Rng::new(seed),
            loss: Loss::None,
            bad: false,
            corrupt: Prob::ZERO,
            corrupt_max_bytes: 1,
            duplicate: Prob::ZERO,
            reorder_window: 0,
            stats: LinkStats::default(),
        }
    }

    /// Sets the loss model.
    pub fn with_loss(mut self, loss: Loss) -> Self {
        self.loss = loss;
        self
    }

    /// Each delivered frame has `1..=max_bytes` bytes flipped with probability `p`.
    pub fn with_corruption(mut self, p: f64, max_bytes: u32) -> Self {
        self.corrupt = Prob::new(p);
        self.corrupt_max_bytes = max_bytes.max(1);
        self
    }

    /// Each delivered frame arrives twice with probability `p`.
    pub fn with_duplication(mut self, p: f64) -> Self {
        self.duplicate = Prob::new(p);
        self
    }

    /// Frames may arrive up to `window` places out of order (0: in order).
    pub fn with_reordering(mut self, window: usize) -> Self {
        self.reorder_window = window;
        self
    }

    /// Counters so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    fn lost(&mut self) -> bool {
        match self.loss {
            Loss::None => false,
            Loss::Iid(p) => self.rng.chance(p),
            Loss::GilbertElliott {
                to_bad,
                to_good,
                loss_good,
                loss_bad,
            } => {
                let flip = if self.bad { to_good } else { to_bad };
                if self.rng.chance(flip) {
                    self.bad = !self.bad;
                }
                self.rng.chance(if self.bad { loss_bad } else { loss_good })
            }
        }
    }

    fn corrupt(&mut self, frame: &mut [u8]) {
        if frame.is_empty() {
            return;
        }
        let n = 1 + self.rng.below(u64::from(self.corrupt_max_bytes));
        for _ in 0..n {
            let at = self.rng.below(frame.len() as u64) as usize;
            // A non-zero mask, so the byte really changes.
            let mask = 1 + self.rng.below(255) as u8;
            frame[at] ^= mask;
        }
    }

    /// Lets `frame_times` frame slots pass with nothing sent, so a burst can end (or start)
    /// between passes — between two passes lies at least a round trip.
    pub fn advance(&mut self, frame_times: u64) {
        if let Loss::GilbertElliott {
            to_bad, to_good, ..
        } = self.loss
        {
            for _ in 0..frame_times {
                let flip = if self.bad { to_good } else { to_bad };
                if self.rng.chance(flip) {
                    self.bad = !self.bad;
                }
            }
        }
    }

    /// The frames that arrive, in arrival order, for `frames` put on air in order.
    pub fn transmit(&mut self, frames: impl IntoIterator<Item = Vec<u8>>) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut window: Vec<Vec<u8>> = Vec::new();
        for mut frame in frames {
            self.stats.sent += 1;
            self.stats.sent_bytes += frame.len() as u64;
            if self.lost() {
                self.stats.lost += 1;
                continue;
            }
            if self.rng.chance(self.corrupt) {
                self.stats.corrupted += 1;
                self.corrupt(&mut frame);
            }
            let copies = if self.rng.chance(self.duplicate) {
                self.stats.duplicated += 1;
                2
            } else {
                1
            };
            for i in 0..copies {
                let f = if i + 1 == copies {
                    core::mem::take(&mut frame)
                } else {
                    frame.clone()
                };
                if self.reorder_window == 0 {
                    out.push(f);
                    continue;
                }
                window.push(f);
                if window.len() > self.reorder_window {
                    let at = self.rng.below(window.len() as u64) as usize;
                    out.push(window.swap_remove(at));
                }
            }
        }
        while !window.is_empty() {
            let at = self.rng.below(window.len() as u64) as usize;
            out.push(window.swap_remove(at));
        }
        self.stats.delivered += out.len() as u64;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| (i as u32).to_le_bytes().to_vec()).collect()
    }

    #[test]
    fn rng_is_fixed() {
        // xoshiro256** seeded by SplitMix64(0): pinned so the models never drift.
        let mut r = Rng::new(0);
        let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        let mut r2 = Rng::new(0);
        assert_eq!(first, (0..3).map(|_| r2.next_u64()).collect::<Vec<_>>());
        assert_eq!(first[0], 0x99ec_5f36_cb75_f2b4);
    }

    #[test]
    fn iid_loss_rate() {
        let mut link = LinkModel::new(7).with_loss(Loss::iid(0.1));
        let got = link.transmit(frames(100_000));
        let lost = 100_000 - got.len();
        assert!((9_000..11_000).contains(&lost), "{lost}");
    }

    #[test]
    fn bursts_have_the_requested_mean_length() {
        let mut link = LinkModel::new(3).with_loss(Loss::bursts(0.1, 20.0));
        let got = link.transmit(frames(200_000));
        let ids: Vec<u32> = got
            .iter()
            .map(|f| u32::from_le_bytes([f[0], f[1], f[2], f[3]]))
            .collect();
        let mut bursts = 0u64;
        let mut lost = 0u64;
        let mut prev: Option<u32> = None;
        for &id in &ids {
            let expect = prev.map_or(0, |p| p + 1);
            if id > expect {
                bursts += 1;
                lost += u64::from(id - expect);
            }
            prev = Some(id);
        }
        let mean = lost as f64 / bursts as f64;
        let rate = lost as f64 / 200_000.0;
        assert!((15.0..25.0).contains(&mean), "mean burst {mean}");
        assert!((0.08..0.12).contains(&rate), "loss {rate}");
    }

    #[test]
    fn deterministic_and_impaired() {
        let run = || {
            let mut link = LinkModel::new(42)
                .with_loss(Loss::iid(0.2))
                .with_corruption(0.1, 2)
                .with_duplication(0.1)
                .with_reordering(8);
            (link.transmit(frames(1000)), link.stats())
        };
        let (a, sa) = run();
        let (b, _) = run();
        assert_eq!(a, b);
        assert!(sa.lost > 0 && sa.corrupted > 0 && sa.duplicated > 0);
        assert_eq!(sa.delivered, a.len() as u64);
        assert_eq!(sa.sent - sa.lost + sa.duplicated, sa.delivered);
    }
}
