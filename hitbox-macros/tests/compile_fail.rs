//! Misuses of `#[cached]` fail to compile, with an error at the offending
//! token (the expected messages are the `.stderr` files beside each case).

#[test]
fn misuses_are_compile_errors() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
