// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for the Rust abstractions of dm-log-userspace: static inline
 * functions and macros have no symbol Rust could call. Calling the macros
 * from C also absorbs their renames between kernel versions. Each helper is
 * the one-line use of the API it names; the prefix keeps them apart from the
 * kernel's own rust_helper_*.
 */
#include <linux/completion.h>
#include <linux/device-mapper.h>
#include <linux/jiffies.h>
#include <linux/mempool.h>
#include <linux/module.h>
#include <linux/netlink.h>
#include <linux/spinlock.h>
#include <linux/user_namespace.h>
#include <linux/workqueue.h>

#include "../include/dm_log_userspace_bindings.h"

sector_t dmlu_target_len(struct dm_target *ti)
{
	return ti->len;
}

void dmlu_target_event(struct dm_target *ti)
{
	dm_table_event(ti->table);
}

int dmlu_target_get_device(struct dm_target *ti, const char *path,
			   struct dm_dev **result)
{
	return dm_get_device(ti, path, dm_table_get_mode(ti->table), result);
}

unsigned long dmlu_jiffies(void)
{
	return READ_ONCE(jiffies);
}

void dmlu_init_completion(struct completion *x)
{
	init_completion(x);
}

void dmlu_reinit_completion(struct completion *x)
{
	reinit_completion(x);
}

#ifndef DMLU_SPINLOCK_IRQ
/*
 * spin_lock_irq_disable() and its siblings as Linux 7.3 has them, for the
 * module's own SpinLockIrq on kernels whose Rust crate has none: interrupt
 * disabling is counted, so the first lock taken on a CPU saves the
 * interrupt state and the last one released restores it, whatever order
 * the guards are dropped in (spin_unlock_irqrestore() restores the state
 * its own lock saw, and dropping the outer guard first would enable
 * interrupts under the inner lock). Interrupts stay disabled while the
 * count is nonzero, so the task cannot migrate and the per-CPU state is its
 * own. On PREEMPT_RT a spinlock_t sleeps and leaves interrupts alone, as
 * spin_lock_irqsave() does there.
 */
struct dmlu_irq_state {
	unsigned int count;
	unsigned long flags;
};

static DEFINE_PER_CPU(struct dmlu_irq_state, dmlu_irq_state);

static void dmlu_interrupt_disable(void)
{
#ifndef CONFIG_PREEMPT_RT
	unsigned long flags;

	local_irq_save(flags);
	if (this_cpu_inc_return(dmlu_irq_state.count) == 1)
		this_cpu_write(dmlu_irq_state.flags, flags);
#endif
}

static void dmlu_interrupt_enable(void)
{
#ifndef CONFIG_PREEMPT_RT
	if (this_cpu_dec_return(dmlu_irq_state.count) == 0)
		local_irq_restore(this_cpu_read(dmlu_irq_state.flags));
#endif
}

void dmlu_spin_lock_irq_disable(spinlock_t *lock)
{
	dmlu_interrupt_disable();
	spin_lock(lock);
}

void dmlu_spin_unlock_irq_enable(spinlock_t *lock)
{
	spin_unlock(lock);
	dmlu_interrupt_enable();
}

bool dmlu_spin_trylock_irq_disable(spinlock_t *lock)
{
	dmlu_interrupt_disable();
	if (spin_trylock(lock))
		return true;
	dmlu_interrupt_enable();
	return false;
}

void dmlu_spin_assert_is_held(spinlock_t *lock)
{
	lockdep_assert_held(lock);
}
#endif

bool dmlu_irqs_disabled(void)
{
	return irqs_disabled();
}

/*
 * netlink_capable(skb, CAP_SYS_ADMIN), as rtnetlink and genetlink check
 * their senders, for the parameters a connector callback gets in place of
 * the skb.
 */
bool dmlu_netlink_capable(const struct netlink_skb_parms *nsp)
{
	return __netlink_ns_capable(nsp, &init_user_ns, CAP_SYS_ADMIN);
}

int dmlu_mempool_init_kmalloc(mempool_t *pool, int min_nr, size_t size)
{
	return mempool_init_kmalloc_pool(pool, min_nr, size);
}

void *dmlu_mempool_alloc(mempool_t *pool, gfp_t gfp)
{
	return mempool_alloc(pool, gfp);
}

/*
 * Newer kernels want every workqueue to say WQ_PERCPU or WQ_UNBOUND (and
 * warn otherwise); older ones have no WQ_PERCPU, per-cpu being their
 * default. Kbuild defines DMLU_WQ_PERCPU when the kernel has it (an enum,
 * invisible to #ifdef). The C module asks for a per-cpu one too.
 */
#ifdef DMLU_WQ_PERCPU
#define DMLU_WQ_FLAGS (WQ_MEM_RECLAIM | WQ_PERCPU)
#else
#define DMLU_WQ_FLAGS WQ_MEM_RECLAIM
#endif

struct workqueue_struct *dmlu_alloc_reclaim_workqueue(const char *name)
{
	return alloc_workqueue("%s", DMLU_WQ_FLAGS, 0, name);
}

void dmlu_init_delayed_work(struct delayed_work *dwork, work_func_t fn)
{
	INIT_DELAYED_WORK(dwork, fn);
}

bool dmlu_queue_delayed_work(struct workqueue_struct *wq,
			     struct delayed_work *dwork, unsigned long delay)
{
	return queue_delayed_work(wq, dwork, delay);
}

/*
 * The module! macro of Linux 6.12 has no version field, and spells the
 * author field differently from 7.3's (author, authors): both are here.
 */
MODULE_VERSION(DMLU_VERSION);
MODULE_AUTHOR("dm-log-userspace developers");
