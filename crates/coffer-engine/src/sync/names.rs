//! Names the engine makes: conflicted copies, dated like Dropbox's, in UTC.

use crate::model::RelPath;

/// `(year, month, day, hour, minute)` in UTC of a Unix time in ns.
pub fn civil(ns: i64) -> (i64, u32, u32, u32, u32) {
    let secs = ns.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let to_u32 = |v: i64| u32::try_from(v).unwrap_or(0);
    (year, to_u32(month), to_u32(day), to_u32(rem / 3600), to_u32(rem % 3600 / 60))
}

/// Longest device name, in bytes, that goes into a conflicted copy's name.
const MAX_DEVICE_BYTES: usize = 64;

/// `report (conflicted copy from laptop 2026-11-26 14-03).docx`, with ` 2`,
/// ` 3`... appended inside the parentheses for `attempt` > 1. The extension
/// is kept so the copy still opens with the same program; dot-files and
/// directories keep their whole name. The name is cut to fit a component's
/// 255 bytes and the path's 4096 (the stem first, then the extension), so
/// the copy is always another name in the same folder, unless the folder's
/// own path leaves no room for one (then `path` itself comes back, and the
/// caller finds no free name).
pub fn conflicted_copy(path: &RelPath, device: &str, now_ns: i64, attempt: u32) -> RelPath {
    let (y, mo, d, h, mi) = civil(now_ns);
    let mut device: String = device.chars().filter(|c| *c != '/' && *c != '\0').collect();
    truncate_to(&mut device, MAX_DEVICE_BYTES);
    let suffix = if attempt > 1 { format!(" {attempt}") } else { String::new() };
    let tag = format!(" (conflicted copy from {device} {y:04}-{mo:02}-{d:02} {h:02}-{mi:02}{suffix})");
    let name = path.file_name();
    let parent = path.parent();
    let room = 255.min(4096usize.saturating_sub(parent.as_ref().map_or(0, |p| p.as_str().len() + 1)));
    let (stem, ext) = match name.rfind('.') {
        // An extension too long to keep beside the tag is cut like the stem.
        Some(i) if i > 0 && tag.len() + name.len() - i <= room => name.split_at(i),
        _ => (name, ""),
    };
    let mut stem = stem.to_string();
    truncate_to(&mut stem, room.saturating_sub(tag.len() + ext.len()));
    let new_name = format!("{stem}{tag}{ext}");
    let full = match &parent {
        Some(p) => format!("{}/{new_name}", p.as_str()),
        None => new_name,
    };
    RelPath::new(full).unwrap_or_else(|_| path.clone())
}

/// Cuts `s` to at most `max` bytes, at a character boundary.
fn truncate_to(s: &mut String, max: usize) {
    while s.len() > max {
        s.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropbox_style_names() {
        // 2026-11-26 14:03:59 UTC
        let t = 1_795_701_839_000_000_000;
        assert_eq!(civil(t), (2026, 11, 26, 14, 3));
        let p = RelPath::new("docs/report.docx").unwrap();
        assert_eq!(
            conflicted_copy(&p, "laptop", t, 1).as_str(),
            "docs/report (conflicted copy from laptop 2026-11-26 14-03).docx"
        );
        assert_eq!(
            conflicted_copy(&RelPath::new(".bashrc").unwrap(), "pc", t, 2).as_str(),
            ".bashrc (conflicted copy from pc 2026-11-26 14-03 2)"
        );
        let long = RelPath::new(format!("{}.txt", "x".repeat(250))).unwrap();
        assert!(conflicted_copy(&long, "pc", t, 1).file_name().len() <= 255);
        assert_eq!(civil(0), (1970, 1, 1, 0, 0));
    }

    /// Found by the `rel_path` fuzz target: a long device name in a
    /// multi-byte script, a long extension or a deep path made a name over
    /// the limits, and the "copy" came back as the original path (the
    /// conflict then failed with "no free name" every round).
    #[test]
    fn a_conflicted_copy_always_gets_a_name_of_its_own() {
        let t = 1_795_701_839_000_000_000;
        let cases = [
            (RelPath::new("a.txt").unwrap(), "\u{1f600}".repeat(64)),
            (RelPath::new(format!("a.{}", "e".repeat(250))).unwrap(), "pc".to_string()),
            (
                RelPath::new(format!(
                    "{}/{}/{}.txt",
                    vec!["d".repeat(200); 19].join("/"),
                    "e".repeat(180),
                    "x".repeat(80)
                ))
                .unwrap(),
                "pc".into(),
            ),
            (RelPath::new(format!("{}.txt", "\u{e9}".repeat(125))).unwrap(), "\u{6f22}".repeat(60)),
        ];
        for (p, device) in cases {
            let c = conflicted_copy(&p, &device, t, 7);
            assert_ne!(c, p, "{device}");
            assert_eq!(c.parent(), p.parent());
            assert!(c.file_name().contains("conflicted copy from"), "{c}");
        }
    }
}
