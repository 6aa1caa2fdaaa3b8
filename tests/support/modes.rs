//! Tests that run once in Basic and once in token mode.

/// The tests `$basic` and `$token`: `$body` in Basic and in token mode
/// (attributes before a name apply to that test only).
#[macro_export]
macro_rules! in_both_modes {
    ($body:ident: $(#[$b:meta])* $basic:ident, $(#[$t:meta])* $token:ident) => {
        #[test]
        $(#[$b])*
        fn $basic() {
            $body(Mode::Basic);
        }

        #[test]
        $(#[$t])*
        fn $token() {
            $body(Mode::Token);
        }
    };
}

/// Which auth mode a test of [`in_both_modes`] runs in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Basic,
    Token,
}
