//! The bundled font. Plotters' ab_glyph text backend knows only the fonts registered with it
//! (it never looks at the system), so rendering works the same on a bare CI machine with no
//! fonts installed. DejaVu Sans: Bitstream Vera licence, see `assets/LICENSE-DejaVuSans.txt`.

use std::sync::OnceLock;

use plotters::style::{register_font, FontStyle};

/// The family every chart uses (plotters' default text style asks for it too).
pub const FONT_FAMILY: &str = "sans-serif";

static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Registers the bundled font once per process; later calls return the first call's outcome.
pub fn ensure_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            register_font(FONT_FAMILY, FontStyle::Normal, DEJAVU_SANS)
                .map_err(|_| "the bundled DejaVuSans.ttf is not a valid font".to_string())
        })
        .clone()
}
