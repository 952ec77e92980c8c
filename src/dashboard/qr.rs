//! QR codes as inline SVG for the Link page: one `<path>` of the dark
//! modules, with the 4-module quiet zone scanners need. Only numbers go
//! into the markup, so it is safe to embed unescaped.

use qrcode::{Color, QrCode};

const QUIET_ZONE: usize = 4;

/// `payload` as an SVG QR code, or `None` if it is too long for one.
pub fn svg(payload: &str) -> Option<String> {
    let code = QrCode::new(payload.as_bytes()).ok()?;
    let width = code.width();
    let colors = code.to_colors();
    let size = width + 2 * QUIET_ZONE;
    // One rectangle per run of dark modules in a row: fewer seams where
    // anti-aliasing would show between neighbours, and a smaller page.
    let mut path = String::with_capacity(colors.len() * 2);
    for (y, row) in colors.chunks(width).enumerate() {
        let mut x = 0;
        while x < width {
            if row[x] != Color::Dark {
                x += 1;
                continue;
            }
            let run = row[x..].iter().take_while(|c| **c == Color::Dark).count();
            let (left, top) = (x + QUIET_ZONE, y + QUIET_ZONE);
            path.push_str(&format!("M{left} {top}h{run}v1h-{run}z"));
            x += run;
        }
    }
    Some(format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" shape-rendering="crispEdges" role="img" aria-label="QR code"><rect width="{size}" height="{size}" fill="#fff"/><path fill="#000" d="{path}"/></svg>"##
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qr_code_is_one_path_of_its_dark_runs_inside_a_quiet_zone() {
        let svg = svg("2@abc,def,ghi,jkl").unwrap();
        let code = QrCode::new(b"2@abc,def,ghi,jkl").unwrap();
        let size = code.width() + 2 * QUIET_ZONE;
        assert!(svg.starts_with("<svg") && svg.contains(&format!("viewBox=\"0 0 {size} {size}\"")));
        let dark = code
            .to_colors()
            .iter()
            .filter(|c| **c == Color::Dark)
            .count();
        let drawn: usize = svg
            .split("\"M")
            .nth(1)
            .unwrap()
            .split('h')
            .skip(1)
            .step_by(2)
            .map(|run| run.split('v').next().unwrap().parse::<usize>().unwrap())
            .sum();
        assert_eq!(drawn, dark, "every dark module is drawn once");
        // The top-left finder pattern's first row: 7 dark modules.
        assert!(svg.contains(&format!("M{QUIET_ZONE} {QUIET_ZONE}h7v1h-7z")));
    }

    #[test]
    fn a_payload_too_long_for_a_qr_code_has_none() {
        assert!(svg(&"x".repeat(8000)).is_none());
    }
}
