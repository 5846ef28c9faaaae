//! Two tasks under one name: a process pool refuses to start, naming the name.

#[path = "support/runner.rs"]
mod runner;

mod first {
    #[martelli::task(name = "shared_name")]
    pub(crate) fn one() -> u32 {
        1
    }
}

mod second {
    #[martelli::task(name = "shared_name")]
    pub(crate) fn two() -> u32 {
        2
    }
}

fn main() {
    martelli::init();
    runner::run(&[(
        "duplicate_task_names_are_refused",
        duplicate_task_names_are_refused,
    )]);
}

fn duplicate_task_names_are_refused() {
    let err = martelli::Pool::processes(1).expect_err("duplicate names must be refused");
    assert!(
        matches!(err, martelli::Error::DuplicateTask(ref d) if d.name == "shared_name"),
        "{err}"
    );
    assert!(
        err.to_string().contains("#[martelli::task(name = "),
        "{err}"
    );
    // The typed handles still work where no registry is needed: in this process.
    assert_eq!(first::one::call() + second::two::call(), 3);
}
