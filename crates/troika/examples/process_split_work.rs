//! Python's `multiprocessing.Process` splitting work three ways: square the
//! integers 1..1500, split into three parts, one child process each, and
//! gather the parts back in order.

use troika::Process;

troika::remote! {
    /// One part of the task: the squares of `start..end`.
    fn subtask(part: usize, start: u64, end: u64) -> Vec<u64> {
        println!("subtask_{part}");
        let res: Vec<u64> = (start..end).map(|val| val * val).collect();
        println!("> end subtask_{part}");
        res
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    troika::init();
    let parts = [(1, 1, 500), (2, 500, 1000), (3, 1000, 1501)];
    let processes = parts
        .into_iter()
        .map(|part| Process::spawn(subtask, part))
        .collect::<Result<Vec<_>, _>>()?;
    let mut squares = Vec::new();
    for p in processes {
        squares.extend(p.join()?);
    }
    assert_eq!(squares.len(), 1500);
    assert_eq!(squares.last(), Some(&(1500 * 1500)));
    println!("{} squares, the last is {}", squares.len(), squares[1499]);
    Ok(())
}
