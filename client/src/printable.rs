//! Text other people wrote (messages, file and group names, notices) reaches a terminal. Control
//! characters in it would be obeyed, not shown: an escape sequence can clear the screen, draw a
//! fake message, retitle the window or, on some terminals, write the clipboard; bidirectional
//! overrides reorder what is displayed. Every line this client prints passes through here, so
//! such characters are shown as visible stand-ins instead.

use std::borrow::Cow;

/// `text` with every control character except newline and tab shown as caret notation (`^[`
/// for ESC, `^?` for DEL) or, for C1 controls and bidirectional formatting, as `�`.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !unsafe_char(c) => out.push(c),
            '\u{0}'..='\u{1f}' => {
                out.push('^');
                out.push(char::from(c as u8 + 0x40));
            }
            '\u{7f}' => out.push_str("^?"),
            _ => out.push('\u{fffd}'),
        }
    }
    Cow::Owned(out)
}

fn unsafe_char(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_overrides_are_shown_not_obeyed() {
        assert_eq!(
            terminal_safe("plain text, ünïcode ✓"),
            "plain text, ünïcode ✓"
        );
        assert!(matches!(
            terminal_safe("two\nlines\tand a tab"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            terminal_safe("\x1b[2J\x1b]0;pwned\x07"),
            "^[[2J^[]0;pwned^G"
        );
        assert_eq!(terminal_safe("carriage\rreturn\x7f"), "carriage^Mreturn^?");
        assert_eq!(terminal_safe("c1 \u{9b}31m"), "c1 \u{fffd}31m");
        assert_eq!(terminal_safe("abc\u{202e}fdp.exe"), "abc\u{fffd}fdp.exe");
    }
}
