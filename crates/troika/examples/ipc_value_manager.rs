//! Python's `multiprocessing.Value`, `Array` and `Manager`: a shared Value
//! and Array, and a Manager's map and list, updated by child processes.
//!
//! Each child is this program re-executed, receiving the shared objects as a
//! serialized argument.

use std::process::Command;
use troika::ipc::{Array, Manager, SharedList, SharedMap, Value};

const ROLE: &str = "TROIKA_EXAMPLE_ROLE";
const ARG: &str = "TROIKA_EXAMPLE_ARG";

type Args = (
    Value<f64>,
    Array<i32>,
    SharedMap<String, i32>,
    SharedList<i32>,
);

fn f(id: i32, (num, arr, d, l): Args) -> Result<(), troika::ipc::IpcError> {
    *num.lock() += std::f64::consts::PI;
    for x in arr.lock().iter_mut() {
        *x = -*x;
    }
    d.insert(&format!("child {id}"), &id)?;
    l.push(&id)?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Ok(role) = std::env::var(ROLE) {
        f(role.parse()?, serde_json::from_str(&std::env::var(ARG)?)?)?;
        return Ok(());
    }
    let num = Value::new(0.0f64)?;
    let arr = Array::from_slice(&(0..10).collect::<Vec<i32>>())?;
    let manager = Manager::start()?;
    let d = manager.map::<String, i32>("d")?;
    let l = manager.list::<i32>("l")?;
    let args = serde_json::to_string(&(&num, &arr, &d, &l))?;
    let children = (0..2)
        .map(|i| {
            Command::new(std::env::current_exe()?)
                .env(ROLE, i.to_string())
                .env(ARG, &args)
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    for mut c in children {
        c.wait()?;
    }
    println!("{:.7}", num.get());
    println!("{:?}", arr.to_vec());
    println!("{:?}", d.items()?);
    let mut items = l.to_vec()?;
    items.sort();
    println!("{items:?}");
    Ok(())
}
