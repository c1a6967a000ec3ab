use super::*;

/// Leases spread over the CPUs, least used first; a CPU comes back when its lease ends; with
/// more workers than CPUs the sharing is even.
#[test]
fn leases_take_the_least_used_cpus_and_give_them_back() {
    let pool = CpuPool::new(vec![4, 5, 6, 4]);
    assert_eq!(pool.cpus(), &[4, 5, 6]);
    let a = pool.take(1);
    let b = pool.take(1);
    let c = pool.take(1);
    assert_eq!((a.cpu(0), b.cpu(0), c.cpu(0)), (Some(4), Some(5), Some(6)));
    assert_eq!(a.cpu(1), None);
    drop(b);
    // The free CPU first, then the sharing begins at the front.
    let d = pool.take(2);
    assert_eq!(d.cpus(), vec![5, 4]);
    drop((a, c, d));
    // Everything back: a lease larger than the pool shares evenly, in order.
    let e = pool.take(7);
    assert_eq!(e.cpus(), vec![4, 5, 6, 4, 5, 6, 4]);
    let f = pool.take(2);
    assert_eq!(f.cpus(), vec![5, 6]);
}

#[test]
fn an_empty_pool_pins_nothing() {
    let pool = CpuPool::new(Vec::new());
    let p = pool.take(3);
    assert_eq!(p.cpu(0), None);
    assert!(p.cpus().is_empty());
}
