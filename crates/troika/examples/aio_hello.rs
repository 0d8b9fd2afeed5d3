//! Python's `asyncio` hello: a coroutine — an `async fn` — does nothing until
//! a runtime runs it.

async fn print_hello() {
    println!("hello world");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Calling the coroutine only makes a future; Python shows `<coroutine object ...>`.
    let coroutine = print_hello();
    println!(
        "made a future of {} bytes; nothing printed yet",
        size_of_val(&coroutine)
    );

    // `asyncio.run(print_hello())`: hand it to a runtime.
    let executor = troika::AsyncExecutor::new()?;
    executor.block_on(coroutine)?;

    // Or submit it like any pool task and wait for its handle.
    executor.submit(print_hello()).result()?;
    Ok(())
}
