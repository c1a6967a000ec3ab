//! A client process for fault tests: leases the executor at `argv[1]`, starts a slow
//! invocation (`fault` sleeping `argv[2]` ms), prints `invoked`, and waits for it.

use functions_example as fx;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(socket), Some(ms)) = (args.get(1), args.get(2).and_then(|m| m.parse::<u64>().ok()))
    else {
        eprintln!("usage: rfaas-test-client SOCKET MILLISECONDS");
        std::process::exit(2);
    };
    let lease = rfaas::Lease::connect(socket).unwrap_or_else(|e| {
        eprintln!("lease: {e}");
        std::process::exit(1);
    });
    let inv = lease.invoke(fx::fault::call(2, ms));
    // Send it, then report: the test kills this process while the executor works.
    let handle = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        println!("invoked");
    });
    let r = inv.wait();
    let _ = handle.join();
    println!("result {r:?}");
}
