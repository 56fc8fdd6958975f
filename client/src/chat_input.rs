//! What `hearth-chat chat` reads and how it prints. On a terminal, lines are edited with
//! rustyline, which sees each keystroke (so the others see "alice is typing…"); arriving
//! messages are printed above the line being typed, which is drawn again under them. (Not with
//! rustyline's own external printer: with it, input that arrives in one burst, a paste, waits
//! for the next key.) From a pipe, lines are read as they come.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustyline::hint::Hinter;
use rustyline::{Completer, Helper, Highlighter, Validator};
use tokio::sync::mpsc;

/// What the person at the keyboard did.
#[derive(Debug)]
pub enum Input {
    /// A line to send.
    Line(String),
    /// Started (true) or stopped (false) typing.
    Typing(bool),
}

/// How often "still typing" is said while the line keeps changing (the hearth forgets a typing
/// indicator that is not renewed).
const TYPING_RENEW: Duration = Duration::from_secs(3);

/// Turns edits of the line into typing indicators: one when the line stops being empty, again
/// every [`TYPING_RENEW`] while it changes, and a stop when it is emptied or sent. Lines from a
/// pipe say nothing about typing.
#[derive(Helper, Completer, Highlighter, Validator)]
struct Typist {
    input: mpsc::Sender<Input>,
    /// Whether typing was last said to be on, and when.
    said: Mutex<(bool, Option<Instant>)>,
    /// The line as it stands, to draw again under a printed message.
    line: Arc<Mutex<String>>,
}

impl Typist {
    /// The line was submitted: it is empty again. Returns whether typing had been said to be on
    /// (the submitted line then ends it).
    fn reset(&self) -> bool {
        let (typing, _) = std::mem::take(&mut *self.said.lock().expect("typist lock"));
        self.line.lock().expect("line lock").clear();
        typing
    }
}

impl Hinter for Typist {
    type Hint = String;

    fn hint(&self, line: &str, _pos: usize, _ctx: &rustyline::Context<'_>) -> Option<String> {
        line.clone_into(&mut self.line.lock().expect("line lock"));
        let typing = !line.is_empty();
        let mut said = self.said.lock().expect("typist lock");
        let due = match *said {
            (false, _) => typing,
            (true, at) => !typing || at.is_none_or(|t| t.elapsed() >= TYPING_RENEW),
        };
        if due {
            *said = (typing, Some(Instant::now()));
            let _ = self.input.try_send(Input::Typing(typing));
        }
        None
    }
}

/// The prompt of the line being typed.
const PROMPT: &str = "> ";

/// Where `chat` prints: above the line being edited, or plainly.
pub struct Screen {
    /// The line being edited on a terminal (`None`: print plainly).
    editing: Option<Arc<Mutex<String>>>,
}

impl Screen {
    /// Plain standard output and error (`follow`, and `chat` from a pipe).
    pub fn plain() -> Self {
        Self { editing: None }
    }

    /// A line of output (a message).
    pub fn out(&mut self, text: String) {
        let text = crate::printable::terminal_safe(&text);
        match &self.editing {
            Some(line) => above(line, &text),
            None => say!("{text}"),
        }
    }

    /// A line about what happens (receipts, typing, presence, errors).
    pub fn note(&mut self, text: String) {
        let text = crate::printable::terminal_safe(&text);
        match &self.editing {
            Some(line) => above(line, &text),
            None => eprintln!("{text}"),
        }
    }
}

/// Prints `text` in place of the line being edited (the terminal is in raw mode: `\r\n` ends a
/// line) and draws that line again below it; the editor redraws it itself at the next key.
fn above(line: &Mutex<String>, text: &str) {
    let line = line.lock().expect("line lock");
    let mut out = std::io::stdout().lock();
    let printed = write!(
        out,
        "\r\x1b[K{}\r\n{PROMPT}{line}",
        text.replace('\n', "\r\n")
    )
    .and_then(|()| out.flush());
    if printed.is_err() {
        std::process::exit(0);
    }
}

/// Starts reading what is typed; the channel closes at the end of input (Ctrl-D, or the end of
/// a pipe).
pub fn start() -> (mpsc::Receiver<Input>, Screen) {
    let (input, typed) = mpsc::channel(64);
    if !std::io::stdin().is_terminal() {
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if input.blocking_send(Input::Line(line)).is_err() {
                    break;
                }
            }
        });
        return (typed, Screen::plain());
    }
    let line = Arc::new(Mutex::new(String::new()));
    let editing = line.clone();
    std::thread::spawn(move || {
        let mut editor =
            match rustyline::Editor::<Typist, rustyline::history::DefaultHistory>::new() {
                Ok(editor) => editor,
                Err(e) => {
                    eprintln!("error: cannot read the terminal: {e}");
                    return;
                }
            };
        editor.set_helper(Some(Typist {
            input: input.clone(),
            said: Mutex::new((false, None)),
            line,
        }));
        // Ctrl-C and Ctrl-D end the chat as the end of a pipe does.
        while let Ok(line) = editor.readline(PROMPT) {
            let was_typing = editor.helper().is_some_and(Typist::reset);
            if input.blocking_send(Input::Line(line)).is_err() {
                break;
            }
            // After the line, so the others see the message before the typing stops.
            if was_typing && input.blocking_send(Input::Typing(false)).is_err() {
                break;
            }
        }
    });
    (
        typed,
        Screen {
            editing: Some(editing),
        },
    )
}
