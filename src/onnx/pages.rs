//! Labelled, in-distribution calibration data for a text-orientation model: pages of text
//! rendered with a real font (deterministic from a seed), rotated by k·90°.
//!
//! Pure: font bytes in, pixels out.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont};

/// A grayscale image, row-major, 0 = black, 255 = white.
#[derive(Debug, Clone, PartialEq)]
pub struct Gray {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("not a usable TrueType/OpenType font: {0}")]
    Font(String),
}

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "model",
    "network",
    "inference",
    "latency",
    "channel",
    "edge",
    "cloud",
    "device",
    "partition",
    "compression",
    "accuracy",
    "Kubernetes",
    "tensor",
    "bandwidth",
    "ORIENTATION",
    "Page",
    "Chapter",
    "2026",
    "figure",
    "table",
    "results",
    "method",
    "section",
    "The",
    "In",
    "A",
    "We",
    "data",
];

/// Tiny deterministic generator (SplitMix64): pages must be identical on every machine.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Renders a `side`×`side` page of left-aligned text lines. Font size, margins, line spacing and
/// words vary with `seed`.
pub fn render_page(font: &[u8], seed: u64, side: usize) -> Result<Gray, PageError> {
    let font = FontRef::try_from_slice(font).map_err(|e| PageError::Font(e.to_string()))?;
    let mut rng = Rng(seed ^ 0xC0FFEE);
    let mut img = Gray {
        width: side,
        height: side,
        pixels: vec![255; side * side],
    };
    let px = side as f32 * (0.045 + 0.035 * (rng.below(100) as f32 / 100.0));
    let scaled = font.as_scaled(PxScale::from(px));
    let margin = side as f32 * (0.04 + 0.06 * (rng.below(100) as f32 / 100.0));
    let line_height =
        (scaled.height() + scaled.line_gap()) * (1.1 + 0.4 * (rng.below(100) as f32 / 100.0));
    let ink = rng.below(60) as u8; // near-black text
    let mut y = margin + scaled.ascent();
    while y + scaled.descent() < side as f32 - margin {
        let mut x = margin + if rng.below(4) == 0 { px * 2.0 } else { 0.0 };
        let right = side as f32 - margin - rng.below((side / 4) as u64 + 1) as f32;
        loop {
            let word = WORDS[rng.below(WORDS.len() as u64) as usize];
            let width: f32 = word
                .chars()
                .map(|c| scaled.h_advance(font.glyph_id(c)))
                .sum();
            if x + width > right {
                break;
            }
            for c in word.chars() {
                let glyph = font
                    .glyph_id(c)
                    .with_scale_and_position(px, ab_glyph::point(x, y));
                x += scaled.h_advance(font.glyph_id(c));
                if let Some(outlined) = font.outline_glyph(glyph) {
                    let b = outlined.px_bounds();
                    outlined.draw(|gx, gy, cov| {
                        let (ix, iy) = (b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64);
                        if ix >= 0 && iy >= 0 && (ix as usize) < side && (iy as usize) < side {
                            let p = &mut img.pixels[iy as usize * side + ix as usize];
                            let v = f32::from(*p) * (1.0 - cov) + f32::from(ink) * cov;
                            *p = v.round().clamp(0.0, 255.0) as u8;
                        }
                    });
                }
            }
            x += scaled.h_advance(font.glyph_id(' '));
        }
        y += line_height;
    }
    Ok(img)
}

/// Renders one `width`×`height` line of text (a text-line classifier's input: a crop around
/// one line of a page), left-aligned. Font size, margin, ink and words vary with `seed`.
pub fn render_line(font: &[u8], seed: u64, width: usize, height: usize) -> Result<Gray, PageError> {
    let font = FontRef::try_from_slice(font).map_err(|e| PageError::Font(e.to_string()))?;
    let mut rng = Rng(seed ^ 0x11_4E5);
    let mut img = Gray {
        width,
        height,
        pixels: vec![255; width * height],
    };
    let px = height as f32 * (0.55 + 0.25 * (rng.below(100) as f32 / 100.0));
    let scaled = font.as_scaled(PxScale::from(px));
    let ink = rng.below(60) as u8;
    let mut x = height as f32 * 0.1 * (rng.below(100) as f32 / 100.0);
    // The line's text sits in the middle of the crop, as a detector's box puts it.
    let y = (height as f32 + scaled.ascent() + scaled.descent()) / 2.0;
    loop {
        let word = WORDS[rng.below(WORDS.len() as u64) as usize];
        let w: f32 = word
            .chars()
            .map(|c| scaled.h_advance(font.glyph_id(c)))
            .sum();
        if x + w > width as f32 {
            break;
        }
        for c in word.chars() {
            let glyph = font
                .glyph_id(c)
                .with_scale_and_position(px, ab_glyph::point(x, y));
            x += scaled.h_advance(font.glyph_id(c));
            if let Some(outlined) = font.outline_glyph(glyph) {
                let b = outlined.px_bounds();
                outlined.draw(|gx, gy, cov| {
                    let (ix, iy) = (b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64);
                    if ix >= 0 && iy >= 0 && (ix as usize) < width && (iy as usize) < height {
                        let p = &mut img.pixels[iy as usize * width + ix as usize];
                        let v = f32::from(*p) * (1.0 - cov) + f32::from(ink) * cov;
                        *p = v.round().clamp(0.0, 255.0) as u8;
                    }
                });
            }
        }
        x += scaled.h_advance(font.glyph_id(' '));
    }
    Ok(img)
}

/// Rotates counter-clockwise by `k`·90°.
pub fn rotate_ccw(img: &Gray, k: u32) -> Gray {
    let mut out = img.clone();
    for _ in 0..(k % 4) {
        let (w, h) = (out.width, out.height);
        let mut p = vec![0u8; w * h];
        // (x, y) -> (y, w-1-x): a counter-clockwise quarter turn.
        for y in 0..h {
            for x in 0..w {
                p[(w - 1 - x) * h + y] = out.pixels[y * w + x];
            }
        }
        out = Gray {
            width: h,
            height: w,
            pixels: p,
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn font() -> Option<Vec<u8>> {
        std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").ok()
    }

    fn ink_rows(g: &Gray) -> Vec<usize> {
        (0..g.height)
            .map(|y| {
                g.pixels[y * g.width..(y + 1) * g.width]
                    .iter()
                    .filter(|&&p| p < 128)
                    .count()
            })
            .collect()
    }

    #[test]
    fn pages_are_deterministic_and_differ_by_seed() {
        let Some(font) = font() else {
            panic!("fonts-dejavu-core is required (.ci/run installs it)");
        };
        let a = render_page(&font, 1, 224).unwrap();
        assert_eq!(a, render_page(&font, 1, 224).unwrap());
        assert_ne!(a, render_page(&font, 2, 224).unwrap());
        let dark = a.pixels.iter().filter(|&&p| p < 128).count();
        assert!(
            dark > 224 * 224 / 50,
            "a page has text on it: {dark} dark pixels"
        );
        // Text lines are horizontal: some rows are blank (between lines), some full of ink.
        let rows = ink_rows(&a);
        assert!(rows.iter().filter(|&&n| n == 0).count() > 20);
        assert!(rows.iter().any(|&n| n > 20));
    }

    #[test]
    fn rotation_is_a_quarter_turn_counter_clockwise() {
        let img = Gray {
            width: 3,
            height: 2,
            pixels: vec![1, 2, 3, 4, 5, 6],
        };
        // 1 2 3        3 6
        // 4 5 6   ->   2 5
        //              1 4
        let r = rotate_ccw(&img, 1);
        assert_eq!((r.width, r.height), (2, 3));
        assert_eq!(r.pixels, vec![3, 6, 2, 5, 1, 4]);
        assert_eq!(rotate_ccw(&img, 4), img);
        assert_eq!(rotate_ccw(&rotate_ccw(&img, 3), 1), img);
    }

    #[test]
    fn a_bad_font_is_an_error_not_a_panic() {
        assert!(render_page(b"not a font", 0, 64).is_err());
    }
}
