//! Migrations are embedded with include_str!, so a new or changed file must trigger a rebuild.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
