/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Input to bindgen for dm-log-userspace: the C APIs that `kernel::bindings`
 * of Linux 6.12 lacks (device-mapper dirty logs, the connector, mempools),
 * the module's C helpers for static inlines and macros, and the wire ABI of
 * the uapi header so the Rust encoder can be checked against it at build time.
 */
#include <linux/connector.h>
#include <linux/device-mapper.h>
#include <linux/dm-dirty-log.h>
#include <linux/mempool.h>
#include <linux/workqueue.h>
#include "uapi/linux/dm-log-userspace.h"

/* Constants bindgen cannot see through macros. */
const gfp_t DMLU_GFP_NOIO = GFP_NOIO;
const unsigned long DMLU_MAX_ERRNO = MAX_ERRNO;

/* Helpers, defined in src/helpers.c. */
sector_t dmlu_target_len(struct dm_target *ti);
void dmlu_target_event(struct dm_target *ti);
int dmlu_target_get_device(struct dm_target *ti, const char *path,
			   struct dm_dev **result);
unsigned long dmlu_jiffies(void);
void dmlu_init_completion(struct completion *x);
void dmlu_reinit_completion(struct completion *x);
void dmlu_spin_lock_irq_disable(spinlock_t *lock);
void dmlu_spin_unlock_irq_enable(spinlock_t *lock);
bool dmlu_spin_trylock_irq_disable(spinlock_t *lock);
void dmlu_spin_assert_is_held(spinlock_t *lock);
bool dmlu_irqs_disabled(void);
bool dmlu_netlink_capable(const struct netlink_skb_parms *nsp);
int dmlu_mempool_init_kmalloc(mempool_t *pool, int min_nr, size_t size);
void *dmlu_mempool_alloc(mempool_t *pool, gfp_t gfp);
struct workqueue_struct *dmlu_alloc_reclaim_workqueue(const char *name);
void dmlu_init_delayed_work(struct delayed_work *dwork, work_func_t fn);
bool dmlu_queue_delayed_work(struct workqueue_struct *wq,
			     struct delayed_work *dwork, unsigned long delay);
