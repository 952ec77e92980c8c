//! Pairing codes as a person sees them: the QR code drawn with Unicode half
//! blocks (two modules per character cell, so it fits an 80x24 terminal),
//! and the 8-character pair code split like the phone shows it.

use qrcode::{Color, QrCode};

use crate::WebError;

/// Light modules around the code. The standard asks for 4; 2 keep the code
/// small and phone scanners read it, since the light border is drawn.
const QUIET_ZONE: usize = 2;

/// How to draw the QR code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QrStyle {
    /// Light modules in the terminal's foreground colour. Right on the usual
    /// dark-background terminal, inverted on a light one.
    Plain,
    /// Explicit white-on-black colours (ANSI escapes), right on any terminal.
    Ansi,
}

const ANSI_START: &str = "\x1b[97;40m";
const ANSI_END: &str = "\x1b[0m";

/// The QR code for `payload` as lines of terminal text. Light modules are
/// drawn, dark ones left blank, as `qrencode -t UTF8` does.
pub fn render_qr(payload: &str, style: QrStyle) -> Result<String, WebError> {
    let code = QrCode::new(payload.as_bytes())
        .map_err(|e| WebError::PairingFailed(format!("cannot draw the QR code: {e}")))?;
    let width = code.width();
    let colors = code.to_colors();
    let size = width + 2 * QUIET_ZONE;
    // Light (true) or dark at (x, y) of the code with its quiet zone.
    let light = |x: usize, y: usize| -> bool {
        if x < QUIET_ZONE || y < QUIET_ZONE || x >= width + QUIET_ZONE || y >= width + QUIET_ZONE {
            return true;
        }
        colors[(y - QUIET_ZONE) * width + (x - QUIET_ZONE)] == Color::Light
    };
    let mut out = String::with_capacity(size * (size / 2 + 1) * 4);
    for y in (0..size).step_by(2) {
        if style == QrStyle::Ansi {
            out.push_str(ANSI_START);
        }
        for x in 0..size {
            let top = light(x, y);
            // An odd size leaves the last row alone: its lower half is the
            // terminal's, drawn as dark, outside the code.
            let bottom = y + 1 < size && light(x, y + 1);
            out.push(match (top, bottom) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        if style == QrStyle::Ansi {
            out.push_str(ANSI_END);
        }
        out.push('\n');
    }
    Ok(out)
}

/// `ABCD1234` -> `ABCD-1234`, as WhatsApp shows pair codes. Anything that is
/// not 8 characters is shown unchanged.
pub fn format_pair_code(code: &str) -> String {
    if code.chars().count() == 8 && code.is_ascii() {
        format!("{}-{}", &code[..4], &code[4..])
    } else {
        code.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read a rendering back into rows of light (true) / dark modules.
    fn modules(rendered: &str) -> Vec<Vec<bool>> {
        let mut rows = Vec::new();
        for line in rendered.lines() {
            let line = line.replace(ANSI_START, "").replace(ANSI_END, "");
            let (mut top, mut bottom) = (Vec::new(), Vec::new());
            for c in line.chars() {
                let (t, b) = match c {
                    '█' => (true, true),
                    '▀' => (true, false),
                    '▄' => (false, true),
                    ' ' => (false, false),
                    other => panic!("unexpected character {other:?}"),
                };
                top.push(t);
                bottom.push(b);
            }
            rows.push(top);
            rows.push(bottom);
        }
        rows
    }

    // The shape of a real pairing payload: ref, noise key, identity key, adv secret.
    const PAYLOAD: &str = "2@Yq3m1kO9Jb2b8z1pQx0uV4uX8c2f9Gm0qGm3s1sK7Lr4Q6h2oU5cQ==,\
        8e4Q1b1Yv6x2E9y0cQvXfM0l9r1rO0o2L3hFhK2WwQ4=,\
        Qm5s3r8Zk1l0H2c7sK9wQm1Q2n7t0Jx3Yy9Zf0mB2Hk=,\
        hQ4pN2d8s5Q1a0u3V7Zr2X6f9sK0b1Lm4Jq7Wc8Ey3o=";

    #[test]
    fn the_qr_drawing_reads_back_as_the_qr_code_with_a_light_border() {
        let rendered = render_qr(PAYLOAD, QrStyle::Plain).unwrap();
        let drawn = modules(&rendered);

        let code = QrCode::new(PAYLOAD.as_bytes()).unwrap();
        let width = code.width();
        let size = width + 2 * QUIET_ZONE;
        assert_eq!(drawn[0].len(), size);
        assert!(drawn.len() >= size && drawn.len() <= size + 1);
        let colors = code.to_colors();
        for y in 0..size {
            for x in 0..size {
                let inside = (QUIET_ZONE..QUIET_ZONE + width).contains(&x)
                    && (QUIET_ZONE..QUIET_ZONE + width).contains(&y);
                let expected =
                    !inside || colors[(y - QUIET_ZONE) * width + (x - QUIET_ZONE)] == Color::Light;
                assert_eq!(drawn[y][x], expected, "module ({x}, {y})");
            }
        }
    }

    #[test]
    fn the_ansi_style_draws_the_same_modules_in_explicit_colours() {
        let plain = render_qr(PAYLOAD, QrStyle::Plain).unwrap();
        let ansi = render_qr(PAYLOAD, QrStyle::Ansi).unwrap();
        assert!(ansi
            .lines()
            .all(|l| l.starts_with(ANSI_START) && l.ends_with(ANSI_END)));
        assert_eq!(modules(&plain), modules(&ansi));
        assert!(!plain.contains('\x1b'));
    }

    #[test]
    fn a_whatsapp_sized_qr_code_fits_an_80_column_terminal() {
        let rendered = render_qr(PAYLOAD, QrStyle::Plain).unwrap();
        let columns = rendered.lines().map(|l| l.chars().count()).max().unwrap();
        assert!(columns <= 80, "{columns} columns");
        assert!(rendered.lines().count() <= 40);
    }

    #[test]
    fn pair_codes_are_shown_in_two_groups_of_four() {
        assert_eq!(format_pair_code("ABCD1234"), "ABCD-1234");
        assert_eq!(format_pair_code("ABC"), "ABC");
        assert_eq!(format_pair_code("ABCD-1234"), "ABCD-1234");
    }
}
