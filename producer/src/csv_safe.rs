//! CSV cells a spreadsheet would run as a formula are neutralised by a leading apostrophe
//! (OWASP's advice): entry names and error messages come from users' archives.

use std::borrow::Cow;

pub fn neutralise(cell: &str) -> Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => Cow::Owned(format!("'{cell}")),
        _ => Cow::Borrowed(cell),
    }
}

#[cfg(test)]
mod tests {
    use super::neutralise;

    #[test]
    fn formula_starters_are_prefixed_and_the_rest_untouched() {
        for bad in ["=1+2", "+cmd", "-2+3", "@SUM(A1)", "\tx", "\rx"] {
            assert_eq!(neutralise(bad), format!("'{bad}"));
        }
        assert_eq!(neutralise("scan_01.png"), "scan_01.png");
        assert_eq!(neutralise(""), "");
    }
}
