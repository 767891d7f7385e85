/* The VM's lifecycle: build (KVM checks, memory, devices, kernel, vCPUs),
 * run (the main thread's event loop), destroy.  The init order is explicit
 * here and nowhere else. */
#include "vmrun/vm.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "vmrun/disk_snapshot.h"
#include "vmrun/migrate.h"
#include "vmrun/snapshot.h"
#include "vmrun/state.h"
#include "vmrun/x86_state.h"
#include "vmrun/exit_report.h"
#include "vmrun/exit_status.h"
#include "vmrun/log.h"
#include "vmrun/nested.h"
#include "vmrun/notify.h"
#include "vmrun/x86.h"
#include "vmrun/utf8.h"

#define KVM_CPUID_MAX_ENTRIES 256

static int kvm_open(struct vm *vm, char *err, size_t errlen)
{
	int version;

	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		int r = -errno;

		if (r == -ENOENT)
			return errmsg(r, err, errlen,
					  "/dev/kvm does not exist: this host has no KVM (enable VT-x/AMD-V and load kvm_intel or kvm_amd)");
		if (r == -EACCES || r == -EPERM)
			return errmsg(r, err, errlen,
					  "permission denied opening /dev/kvm: add your user to the 'kvm' group or run as root");
		return errmsg(r, err, errlen, "cannot open /dev/kvm: %s", strerror(-r));
	}
	version = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
	if (version != KVM_API_VERSION)
		return errmsg(-ENOTSUP, err, errlen, "KVM API version %d, need %d", version,
				  KVM_API_VERSION);
	return 0;
}

struct kvm_required_cap {
	int cap;
	const char *name;
	const char *what;
};

static const struct kvm_required_cap required_caps[] = {
	{ KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY", "user memory slots" },
	{ KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP", "in-kernel interrupt controller" },
	{ KVM_CAP_PIT2, "KVM_CAP_PIT2", "in-kernel PIT" },
	{ KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR", "TSS address" },
	{ KVM_CAP_SET_IDENTITY_MAP_ADDR, "KVM_CAP_SET_IDENTITY_MAP_ADDR", "identity map address" },
	{ KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID", "CPUID configuration" },
	{ KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT", "kicking vCPUs out of KVM_RUN" },
	{ KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE", "SMP start-up" },
};

static int kvm_check_caps(struct vm *vm, char *err, size_t errlen)
{
	int max_vcpus, recommended;

	for (size_t i = 0; i < sizeof(required_caps) / sizeof(required_caps[0]); i++)
		if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, required_caps[i].cap) <= 0)
			return errmsg(-ENOTSUP, err, errlen,
					  "KVM lacks required capability %s (%s)",
					  required_caps[i].name, required_caps[i].what);
	max_vcpus = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	if (max_vcpus <= 0)
		max_vcpus = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	if (max_vcpus <= 0)
		max_vcpus = 4; /* the API's documented floor */
	if (vm->cfg->cpus > (unsigned)max_vcpus)
		return errmsg(-EINVAL, err, errlen,
				  "--cpus %u: this host's KVM supports at most %d vCPUs",
				  vm->cfg->cpus, max_vcpus);
	recommended = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	if (recommended > 0 && vm->cfg->cpus > (unsigned)recommended)
		log_warn("--cpus %u: more vCPUs than this host's KVM recommends (%d, KVM_CAP_NR_VCPUS)",
			 vm->cfg->cpus, recommended);
	vm->run_mmap_size = (size_t)ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if ((ssize_t)vm->run_mmap_size < (ssize_t)sizeof(struct kvm_run))
		return errmsg(-ENOTSUP, err, errlen, "KVM_GET_VCPU_MMAP_SIZE failed");
	return 0;
}

/* The VM file descriptor and the addresses KVM needs in the MMIO hole.
 * TSS and identity map must be set before any vCPU exists. */
static int kvm_create_vm(struct vm *vm, char *err, size_t errlen)
{
	uint64_t identity = X86_IDENTITY_MAP;

	do
		vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	while (vm->vm_fd < 0 && errno == EINTR);
	if (vm->vm_fd < 0)
		return errmsg(-errno, err, errlen, "KVM_CREATE_VM: %s", strerror(errno));
	if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)X86_TSS_ADDR) < 0)
		return errmsg(-errno, err, errlen, "KVM_SET_TSS_ADDR: %s", strerror(errno));
	if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &identity) < 0)
		return errmsg(-errno, err, errlen, "KVM_SET_IDENTITY_MAP_ADDR: %s", strerror(errno));
	return 0;
}

/* The in-kernel interrupt controllers and PIT.  Created after the memory
 * slots: once they exist, every KVM_SET_USER_MEMORY_REGION waits for an SRCU
 * grace period (measured: 4-11 ms per slot on a nested host). */
static int kvm_create_irqchip(struct vm *vm, char *err, size_t errlen)
{
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };

	if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return errmsg(-errno, err, errlen, "KVM_CREATE_IRQCHIP: %s", strerror(errno));
	if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		return errmsg(-errno, err, errlen, "KVM_CREATE_PIT2: %s", strerror(errno));
	return 0;
}

/* ---- what devices may ask of the VM (struct device_host) ---- */

static void host_set_irq(void *opaque, unsigned irq, int level)
{
	struct vm *vm = opaque;
	struct kvm_irq_level line = { .irq = irq, .level = level };

	if (ioctl(vm->vm_fd, KVM_IRQ_LINE, &line) < 0)
		log_warn("KVM_IRQ_LINE %u: %s", irq, strerror(errno));
}

static void host_request_exit(void *opaque, int status, const char *reason)
{
	vm_request_exit(opaque, status, reason);
}

static void host_rx_ready(void *opaque)
{
	struct vm *vm = opaque;
	uint64_t one = 1;

	(void)!write(vm->rx_eventfd, &one, sizeof(one));
}

/* vm_request_exit(), and whether it is the operator's quit (status 0, but
 * reported as kind "quit", not "poweroff"). */
static void vm_request_exit_as(struct vm *vm, int status, bool quit, const char *reason)
{
	uint64_t one = 1;

	pthread_mutex_lock(&vm->state_lock);
	if (!atomic_load(&vm->exiting)) {
		vm->exit_status = status;
		vm->exit_quit = quit;
		snprintf(vm->exit_reason, sizeof(vm->exit_reason), "%s", reason);
		atomic_store(&vm->exiting, true);
	}
	pthread_mutex_unlock(&vm->state_lock);
	(void)!write(vm->exit_eventfd, &one, sizeof(one));
}

void vm_request_exit(struct vm *vm, int status, const char *reason)
{
	vm_request_exit_as(vm, status, false, reason);
}

/* ---- the component table (vmrun/component.h) ---- */

int vm_register(struct vm *vm, const char *name, const struct vm_component_ops *ops, void *obj)
{
	struct vm_component *c;
	size_t len;

	if (vm->n_comps == VM_MAX_COMPONENTS)
		return -ENOSPC;
	c = &vm->comps[vm->n_comps++];
	/* A name longer than the field is cut: it only labels messages. */
	len = strnlen(name, sizeof(c->name) - 1);
	memcpy(c->name, name, len);
	c->name[len] = '\0';
	c->ops = ops;
	c->obj = obj;
	return 0;
}

void vm_quiesce(struct vm *vm)
{
	if (vm->devices_quiesced)
		return;
	for (unsigned i = 0; i < vm->n_comps; i++)
		if (vm->comps[i].ops->quiesce)
			vm->comps[i].ops->quiesce(vm->comps[i].obj);
	vm->devices_quiesced = true;
}

void vm_resume_devices(struct vm *vm)
{
	if (!vm->devices_quiesced)
		return;
	for (unsigned i = 0; i < vm->n_comps; i++)
		if (vm->comps[i].ops->resume)
			vm->comps[i].ops->resume(vm->comps[i].obj);
	vm->devices_quiesced = false;
}

/* The pause's saved state and disk bases are stale once anything runs. */
static void vm_forget_pause_state(struct vm *vm)
{
	free(vm->pause_state);
	vm->pause_state = NULL;
	vm->pause_state_len = 0;
	memset(vm->pause_disk_base, 0, sizeof(vm->pause_disk_base));
}

int vm_pause(struct vm *vm)
{
	int r = vcpus_pause(vm);

	if (r)
		return r;
	vm_quiesce(vm);
	return 0;
}

void vm_resume(struct vm *vm)
{
	vm_forget_pause_state(vm);
	vm_resume_devices(vm);
	vcpus_resume(vm);
}

/* vCPUs: the CPUID table and each vCPU's registers.  Saved by the event
 * loop thread while every vCPU is parked outside KVM_RUN. */
static void comp_vcpus_save(void *obj, struct state_writer *w)
{
	struct vm *vm = obj;

	x86_cpuid_save(vm->cpuid, w); /* begins /cpus, with its version */
	state_put_u32(w, "count", vm->n_vcpus);
	for (unsigned i = 0; i < vm->n_vcpus; i++)
		x86_vcpu_save(vm->kvm_fd, vm->vcpus[i].fd, i, w);
}

static int comp_vcpus_load(void *obj, struct state_reader *r)
{
	struct vm *vm = obj;
	int node = state_node(r, true, "/cpus");
	uint32_t count;

	/* x86_cpuid_load() checked /cpus's version already. */
	if (state_get_u32(r, node, "count", &count))
		return r->err;
	if (count != vm->n_vcpus)
		return state_reject(r, -EINVAL, "state: %u vCPUs saved, %u built", count, vm->n_vcpus);
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		int e = x86_vcpu_load(vm->kvm_fd, vm->vcpus[i].fd, i, r);

		if (e)
			return e;
	}
	return 0;
}

static void comp_vcpus_destroy(void *obj)
{
	struct vm *vm = obj;

	for (unsigned i = 0; vm->vcpus && i < vm->n_vcpus; i++)
		vcpu_exit(&vm->vcpus[i]);
	free(vm->vcpus);
	vm->vcpus = NULL;
}

static const struct vm_component_ops vcpus_ops = {
	.save = comp_vcpus_save,
	.load = comp_vcpus_load,
	.destroy = comp_vcpus_destroy,
};

/* The in-kernel PIC, IOAPIC, PIT and clock. */
static void comp_kvm_save(void *obj, struct state_writer *w)
{
	struct vm *vm = obj;

	x86_vm_save(vm->kvm_fd, vm->vm_fd, w);
}

static int comp_kvm_load(void *obj, struct state_reader *r)
{
	struct vm *vm = obj;

	return x86_vm_load(vm->kvm_fd, vm->vm_fd, r);
}

static const struct vm_component_ops kvm_ops = { .save = comp_kvm_save, .load = comp_kvm_load };

static void comp_serial_save(void *obj, struct state_writer *w) { serial_save(obj, w); }
static int comp_serial_load(void *obj, struct state_reader *r) { return serial_load(obj, r); }
static void comp_serial_destroy(void *obj) { serial_exit(obj); }

static const struct vm_component_ops serial_comp_ops = {
	.save = comp_serial_save, .load = comp_serial_load, .destroy = comp_serial_destroy,
};

static void comp_rtc_save(void *obj, struct state_writer *w) { rtc_save(obj, w); }
static int comp_rtc_load(void *obj, struct state_reader *r) { return rtc_load(obj, r); }
static void comp_rtc_destroy(void *obj) { rtc_exit(obj); }

static const struct vm_component_ops rtc_comp_ops = {
	.save = comp_rtc_save, .load = comp_rtc_load, .destroy = comp_rtc_destroy,
};

/* The node of a virtio device's transport, for its model's sub-node. */
static void mmio_node(const struct virtio_mmio *m, const char *kind, char *buf, size_t len)
{
	snprintf(buf, len, "/devices/%s@%llx", kind, (unsigned long long)m->region.base);
}

static bool disk_on_pci(const struct vm_device *d)
{
	return d->vm->cfg->disks[d->index].transport == VIRTIO_TRANSPORT_PCI;
}

static bool nic_on_pci(const struct vm_device *d)
{
	return d->vm->cfg->nics[d->index].transport == VIRTIO_TRANSPORT_PCI;
}

/* A virtio device's transport, whichever it is: the hooks below. */
static void vt_quiesce(struct virtio_mmio *m, struct virtio_pci *p)
{
	if (p)
		virtio_pci_quiesce(p);
	else
		virtio_mmio_quiesce(m);
}

static void vt_resume(struct virtio_mmio *m, struct virtio_pci *p)
{
	if (p)
		virtio_pci_resume(p);
	else
		virtio_mmio_resume(m);
}

static void vt_save(struct virtio_mmio *m, struct virtio_pci *p, struct state_writer *w,
		    const char *kind, char *node, size_t len)
{
	if (p) {
		virtio_pci_save(p, w, kind);
		virtio_pci_node(p, kind, node, len);
	} else {
		virtio_mmio_save(m, w, kind);
		mmio_node(m, kind, node, len);
	}
}

static void vt_node(struct virtio_mmio *m, struct virtio_pci *p, const char *kind, char *node,
		    size_t len)
{
	if (p)
		virtio_pci_node(p, kind, node, len);
	else
		mmio_node(m, kind, node, len);
}

static int vt_load(struct virtio_mmio *m, struct virtio_pci *p, struct state_reader *r,
		   const char *kind)
{
	return p ? virtio_pci_load(p, r, kind) : virtio_mmio_load(m, r, kind);
}

static int vt_activate_loaded(struct virtio_mmio *m, struct virtio_pci *p)
{
	return p ? virtio_pci_activate_loaded(p) : virtio_mmio_activate_loaded(m);
}

static void vt_exit(struct virtio_mmio *m, struct virtio_pci *p)
{
	if (p)
		virtio_pci_exit(p);
	else
		virtio_mmio_exit(m);
}

/* query-status's transport and address of a device. */
static json_t *vt_query(json_t *o, struct virtio_mmio *m, struct virtio_pci *p)
{
	char addr[32];

	if (!o)
		return NULL;
	if (p) {
		virtio_pci_address(p, addr, sizeof(addr));
		json_object_set_new(o, "transport", json_string("virtio-pci"));
		json_object_set_new(o, "address", json_string(addr));
	} else {
		json_object_set_new(o, "transport", json_string("virtio-mmio"));
		json_object_set_new(o, "address", json_integer((json_int_t)m->region.base));
	}
	return o;
}

#define DISK_MMIO(d) (&(d)->vm->blk_mmio[(d)->index])
#define DISK_PCI(d) (disk_on_pci(d) ? &(d)->vm->blk_pci[(d)->index] : NULL)
#define NIC_MMIO(d) (&(d)->vm->net_mmio[(d)->index])
#define NIC_PCI(d) (nic_on_pci(d) ? &(d)->vm->net_pci[(d)->index] : NULL)

/* A disk: virtio-blk on virtio-mmio or virtio-pci. */
static void comp_disk_quiesce(void *obj)
{
	struct vm_device *d = obj;

	vt_quiesce(DISK_MMIO(d), DISK_PCI(d));
	virtio_blk_quiesce(&d->vm->blks[d->index]);
}

static void comp_disk_resume(void *obj)
{
	struct vm_device *d = obj;

	vt_resume(DISK_MMIO(d), DISK_PCI(d));
}

static void comp_disk_save(void *obj, struct state_writer *w)
{
	struct vm_device *d = obj;
	char node[STATE_PATH_MAX];

	vt_save(DISK_MMIO(d), DISK_PCI(d), w, "virtio-blk", node, sizeof(node));
	virtio_blk_save(&d->vm->blks[d->index], w, node);
}

static int comp_disk_load(void *obj, struct state_reader *r)
{
	struct vm_device *d = obj;
	struct virtio_device *dev = &d->vm->blks[d->index].dev;
	char node[STATE_PATH_MAX];
	int e;

	vt_node(DISK_MMIO(d), DISK_PCI(d), "virtio-blk", node, sizeof(node));
	if ((e = virtio_blk_load(&d->vm->blks[d->index], r, node)) ||
	    (e = vt_load(DISK_MMIO(d), DISK_PCI(d), r, "virtio-blk")))
		return e;
	if ((e = vt_activate_loaded(DISK_MMIO(d), DISK_PCI(d))))
		return state_reject(r, e, "%s: cannot restart the device: %s", dev->name,
				    strerror(-e));
	return 0;
}

static json_t *comp_disk_query(void *obj)
{
	struct vm_device *d = obj;
	const struct blk *b = d->vm->blks[d->index].backend;

	/* A path that is not UTF-8 is shown made valid (vmrun/utf8.h). */
	return vt_query(json_pack("{s:i,s:o,s:s,s:b}", "disk", (int)d->index, "image",
				  utf8_json_string(d->vm->cfg->disks[d->index].path), "format",
				  blk_format_name(blk_format(b)), "readonly", blk_readonly(b)),
			DISK_MMIO(d), DISK_PCI(d));
}

static void comp_disk_destroy(void *obj)
{
	struct vm_device *d = obj;

	/* Drain first: its last completions still raise interrupts. */
	virtio_blk_exit(&d->vm->blks[d->index]);
	vt_exit(DISK_MMIO(d), DISK_PCI(d));
}

static const struct vm_component_ops disk_ops = {
	.quiesce = comp_disk_quiesce, .resume = comp_disk_resume, .save = comp_disk_save,
	.load = comp_disk_load, .query = comp_disk_query, .group = "disks",
	.destroy = comp_disk_destroy,
};

/* A NIC: virtio-net on virtio-mmio or virtio-pci. */
static void comp_nic_quiesce(void *obj)
{
	struct vm_device *d = obj;

	vt_quiesce(NIC_MMIO(d), NIC_PCI(d));
	virtio_net_quiesce(&d->vm->nets[d->index]);
}

static void comp_nic_resume(void *obj)
{
	struct vm_device *d = obj;

	virtio_net_resume(&d->vm->nets[d->index]);
	vt_resume(NIC_MMIO(d), NIC_PCI(d));
}

static void comp_nic_save(void *obj, struct state_writer *w)
{
	struct vm_device *d = obj;
	char node[STATE_PATH_MAX];

	vt_save(NIC_MMIO(d), NIC_PCI(d), w, "virtio-net", node, sizeof(node));
	virtio_net_save(&d->vm->nets[d->index], w, node);
}

static int comp_nic_load(void *obj, struct state_reader *r)
{
	struct vm_device *d = obj;
	struct virtio_device *dev = &d->vm->nets[d->index].dev;
	char node[STATE_PATH_MAX];
	int e;

	vt_node(NIC_MMIO(d), NIC_PCI(d), "virtio-net", node, sizeof(node));
	if ((e = vt_load(NIC_MMIO(d), NIC_PCI(d), r, "virtio-net")))
		return e;
	if ((e = vt_activate_loaded(NIC_MMIO(d), NIC_PCI(d))))
		return state_reject(r, e, "%s: cannot restart the device (tap offloads): %s",
				    dev->name, strerror(-e));
	return virtio_net_load(&d->vm->nets[d->index], r, node);
}

static json_t *comp_nic_query(void *obj)
{
	struct vm_device *d = obj;
	struct virtio_net *n = &d->vm->nets[d->index];
	json_t *o;

	pthread_mutex_lock(&n->dev.lock);
	o = json_pack("{s:i,s:s,s:b,s:i,s:i,s:I,s:I,s:I,s:I}", "nic", (int)d->index, "tap",
		      d->vm->cfg->nics[d->index].tap, "link_up", n->link_up, "queue_pairs",
		      (int)n->queue_pairs, "queue_pairs_active", (int)n->queue_pairs_active,
		      "rx_frames", (json_int_t)n->stats.rx_frames, "tx_frames",
		      (json_int_t)n->stats.tx_frames, "rx_dropped", (json_int_t)n->stats.rx_dropped,
		      "tx_dropped", (json_int_t)n->stats.tx_dropped);
	pthread_mutex_unlock(&n->dev.lock);
	return vt_query(o, NIC_MMIO(d), NIC_PCI(d));
}

static void comp_nic_destroy(void *obj)
{
	struct vm_device *d = obj;

	virtio_net_exit(&d->vm->nets[d->index]);
	vt_exit(NIC_MMIO(d), NIC_PCI(d));
}

static const struct vm_component_ops nic_ops = {
	.quiesce = comp_nic_quiesce, .resume = comp_nic_resume, .save = comp_nic_save,
	.load = comp_nic_load, .query = comp_nic_query, .group = "nets",
	.destroy = comp_nic_destroy,
};

static int vm_build_devices(struct vm *vm, char *err, size_t errlen)
{
	struct bus_region *regions[] = {
		&vm->serial.region, &vm->i8042.data_region, &vm->i8042.status_region,
		&vm->debug_exit.region, &vm->rtc.region,
		&vm->probe_ports.regions[0], &vm->probe_ports.regions[1],
		&vm->probe_ports.regions[2], &vm->probe_ports.regions[3],
		&vm->probe_ports.regions[4],
	};

	vm->dev_host = (struct device_host){ .set_irq = host_set_irq,
					     .request_exit = host_request_exit,
					     .rx_ready = host_rx_ready, .opaque = vm };
	serial_init(&vm->serial, SERIAL_COM1_BASE, SERIAL_COM1_IRQ, vm->console.out_fd,
		    &vm->dev_host);
	serial_set_log_fd(&vm->serial, vm->console.log_fd);
	i8042_init(&vm->i8042, &vm->dev_host);
	debug_exit_init(&vm->debug_exit, &vm->dev_host);
	probe_ports_init(&vm->probe_ports);
	rtc_init(&vm->rtc, NULL, NULL); /* the host's UTC clock */
	if (vm_register(vm, "serial", &serial_comp_ops, &vm->serial) ||
	    vm_register(vm, "rtc", &rtc_comp_ops, &vm->rtc))
		return errmsg(-ENOSPC, err, errlen, "too many components");
	for (size_t i = 0; i < sizeof(regions) / sizeof(regions[0]); i++) {
		int r = bus_register(&vm->pio_bus, regions[i]);

		if (r)
			return errmsg(r, err, errlen, "cannot claim ports of %s: %s",
					  regions[i]->name, strerror(-r));
	}
	return 0;
}

/* Create the vCPUs with their CPUID: the host's supported table for a first
 * boot, the saved one (checked against this host) for a restore.  Then the
 * in-kernel irqchip's state joins the table after them: a restore loads the
 * vCPUs first, then the PIC, IOAPIC, PIT and clock. */
static int vm_build_vcpus(struct vm *vm, char *err, size_t errlen)
{
	int r;

	vm->cpuid = calloc(1, sizeof(*vm->cpuid) +
				      KVM_CPUID_MAX_ENTRIES * sizeof(struct kvm_cpuid_entry2));
	vm->vcpus = calloc(vm->cfg->cpus, sizeof(*vm->vcpus));
	if (!vm->cpuid || !vm->vcpus)
		return errmsg(-ENOMEM, err, errlen, "out of memory");
	for (unsigned i = 0; i < vm->cfg->cpus; i++)
		vm->vcpus[i].fd = vm->vcpus[i].stats_fd = -1;
	vm->n_vcpus = vm->cfg->cpus;
	if (vm_register(vm, "vcpus", &vcpus_ops, vm) || vm_register(vm, "kvm", &kvm_ops, vm))
		return errmsg(-ENOSPC, err, errlen, "too many components");
	if (vm->restore) {
		r = x86_cpuid_load(vm->kvm_fd, &vm->restore->r, vm->cpuid, KVM_CPUID_MAX_ENTRIES);
		if (r)
			return errmsg(r, err, errlen, "%s", vm->restore->r.msg);
	} else {
		vm->cpuid->nent = KVM_CPUID_MAX_ENTRIES;
		if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, vm->cpuid) < 0)
			return errmsg(-errno, err, errlen, "KVM_GET_SUPPORTED_CPUID: %s",
				      strerror(errno));
	}
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		r = vcpu_init(vm, &vm->vcpus[i], i);
		if (r)
			return errmsg(r, err, errlen, "cannot create vCPU %u: %s", i, strerror(-r));
	}
	return 0;
}

/* First boot: the boot vCPU's registers for the kernel's entry.  Only the
 * boot CPU gets a register state; the others wait in the in-kernel LAPIC
 * for INIT/SIPI from the guest. */
static int vm_boot_vcpu(struct vm *vm, char *err, size_t errlen)
{
	int r;

	if (vm->boot.protocol == BOOT_PVH)
		r = x86_setup_pvh(vm->vcpus[0].fd, vm->boot.entry, vm->boot.arg);
	else
		r = x86_setup_long_mode(vm->vcpus[0].fd, vm->boot.entry, vm->boot.arg);
	if (r)
		return errmsg(r, err, errlen, "cannot set the boot vCPU's registers: %s",
				  strerror(-r));
	return 0;
}

/* Where virtio-mmio devices live: 4 KiB apart from VIRTIO_MMIO_BASE in the
 * MMIO hole, each on an ISA IRQ the MP table routes to its IOAPIC pin and
 * no other device uses (0 PIT, 1 keyboard, 2 cascade, 3/4 serial, 8 RTC). */
#define VIRTIO_MMIO_BASE 0xd0000000ull
#define VIRTIO_MMIO_STRIDE 0x1000ull
static const uint32_t virtio_irqs[] = { 5, 6, 7, 9, 10, 11, 12, 13, 14, 15 };
_Static_assert(sizeof(virtio_irqs) / sizeof(virtio_irqs[0]) >= VMRUN_MAX_DISKS + VMRUN_MAX_NICS,
	       "an IRQ for every virtio device");
_Static_assert(VIRTIO_MMIO_BASE + (VMRUN_MAX_DISKS + VMRUN_MAX_NICS) * VIRTIO_MMIO_STRIDE <=
		       X86_PCI_MMIO_BASE, "the PCI window stays clear of virtio-mmio");

/* Claim device @k's (disks first, then NICs) register window and IRQ for
 * @m, set up by the caller's device model, and add it to the guest's
 * command line.  With @p, the device goes on PCI instead (@m unused): the
 * next free slot, its BARs in the PCI window, nothing on the command line. */
static int vm_attach_mmio(struct vm *vm, struct virtio_mmio *m, struct virtio_pci *p,
			  struct virtio_device *dev, unsigned k, const char *what, char *err,
			  size_t errlen)
{
	struct virtio_mmio_host host = { .vm_fd = vm->vm_fd, .loop = &vm->loop };
	size_t used = strlen(vm->device_cmdline);
	char why[300];
	int r;

	if (p) {
		struct virtio_pci_host ph = { .vm_fd = vm->vm_fd, .loop = &vm->loop, .bus = &vm->pci };

		r = virtio_pci_init(p, dev, &ph, why, sizeof(why));
		if (r)
			return errmsg(r, err, errlen, "%s: %s", what, why);
		return 0;
	}
	r = virtio_mmio_init(m, dev, VIRTIO_MMIO_BASE + k * VIRTIO_MMIO_STRIDE, virtio_irqs[k], &host,
			     why, sizeof(why));
	if (r)
		return errmsg(r, err, errlen, "%s: %s", what, why);
	r = bus_register(&vm->mmio_bus, &m->region);
	if (r)
		return errmsg(r, err, errlen, "%s: cannot claim MMIO: %s", what, strerror(-r));
	snprintf(vm->device_cmdline + used, sizeof(vm->device_cmdline) - used, "%s%s",
		 used ? " " : "", m->cmdline_arg);
	return 0;
}

/* PCI INTx: the IOAPIC pin's level. */
static void pci_host_set_irq(void *opaque, unsigned gsi, bool level)
{
	host_set_irq(opaque, gsi, level);
}

static const struct pci_host_ops vm_pci_host_ops = { .set_irq = pci_host_set_irq };

static void comp_pci_destroy(void *obj)
{
	struct vm *vm = obj;

	/* Last of the devices (the table is destroyed backwards). */
	pci_bus_exit(&vm->pci);
	free(vm->blk_pci);
	free(vm->net_pci);
	vm->blk_pci = vm->net_pci = NULL;
	vm->pci_ready = false;
}

static void comp_pci_save(void *obj, struct state_writer *w)
{
	pci_bus_save(&((struct vm *)obj)->pci, w);
}

static int comp_pci_load(void *obj, struct state_reader *r)
{
	return pci_bus_load(&((struct vm *)obj)->pci, r);
}

static const struct vm_component_ops pci_comp_ops = {
	.save = comp_pci_save,
	.load = comp_pci_load,
	.destroy = comp_pci_destroy,
};

/* PCI bus 0 with its host bridge, always there (a kernel with PCI support
 * probes it): configuration ports and the MMIO window claimed, before the
 * first virtio device. */
static int vm_build_pci(struct vm *vm, char *err, size_t errlen)
{
	int r;

	r = pci_bus_init(&vm->pci, X86_PCI_MMIO_BASE, X86_PCI_MMIO_SIZE, vm->vm_fd,
			 &vm_pci_host_ops, vm);
	if (r)
		return errmsg(r, err, errlen, "PCI bus: %s", strerror(-r));
	vm->pci_ready = true;
	if (vm_register(vm, "pci", &pci_comp_ops, vm))
		return errmsg(-ENOSPC, err, errlen, "too many components");
	if ((r = bus_register(&vm->pio_bus, &vm->pci.addr_region)) ||
	    (r = bus_register(&vm->pio_bus, &vm->pci.data_region)) ||
	    (r = bus_register(&vm->mmio_bus, &vm->pci.window)))
		return errmsg(r, err, errlen, "PCI bus: cannot claim its ports or window: %s",
			      strerror(-r));
	return 0;
}

static enum blk_cache disk_cache_mode(enum disk_cache c)
{
	return c == DISK_CACHE_NONE ? BLK_CACHE_NONE :
	       c == DISK_CACHE_UNSAFE ? BLK_CACHE_UNSAFE : BLK_CACHE_WRITEBACK;
}

/* How --disk @d is opened (at start, and again by a live snapshot). */
static struct blk_open_opts disk_open_opts(const struct disk_config *d)
{
	return (struct blk_open_opts){
		.readonly = d->readonly,
		.cache = disk_cache_mode(d->cache),
		.format = d->format == DISK_FORMAT_RAW ? BLK_FORMAT_RAW :
			  d->format == DISK_FORMAT_QCOW2 ? BLK_FORMAT_QCOW2 : BLK_FORMAT_AUTO,
	};
}

/* Open every --disk, build its virtio-blk device and its transport
 * (virtio-mmio: claim the register window and collect the guest's
 * declarations; virtio-pci: a function on bus 0).  The PCI bus comes
 * first, whether or not a device uses it. */
static int vm_build_disks(struct vm *vm, char *err, size_t errlen)
{
	const struct vm_config *cfg = vm->cfg;
	unsigned n_pci = 0;
	int r;

	if ((r = vm_build_pci(vm, err, errlen)))
		return r;
	vm->blk_pci = calloc(VMRUN_MAX_DISKS, sizeof(*vm->blk_pci));
	vm->net_pci = calloc(VMRUN_MAX_NICS, sizeof(*vm->net_pci));
	if (!vm->blk_pci || !vm->net_pci)
		return errmsg(-ENOMEM, err, errlen, "out of memory");
	if (!cfg->n_disks)
		return 0;
	vm->blks = calloc(cfg->n_disks, sizeof(*vm->blks));
	vm->blk_mmio = calloc(cfg->n_disks, sizeof(*vm->blk_mmio));
	if (!vm->blks || !vm->blk_mmio)
		return errmsg(-ENOMEM, err, errlen, "out of memory");
	for (unsigned i = 0; i < cfg->n_disks; i++) {
		const struct disk_config *d = &cfg->disks[i];
		struct blk_open_opts opts = disk_open_opts(d);
		bool pci = d->transport == VIRTIO_TRANSPORT_PCI;
		struct blk *backend;
		char why[300], what[VMRUN_DISK_PATH_MAX + 16];

		/* An incoming migration: the source still holds the image; the
		 * locked handle replaces this one at the switch-over
		 * (vm_take_disks()). */
		opts.no_lock = vm->restore && vm->restore->incoming;
		r = blk_open(d->path, &opts, &vm->loop, &backend, why, sizeof(why));
		if (r)
			return errmsg(r, err, errlen, "--disk: %s", why);
		r = virtio_blk_init(&vm->blks[i], &vm->mem, backend, i, d->serial[0] ? d->serial : NULL,
				    d->cache == DISK_CACHE_UNSAFE);
		if (r) {
			blk_close(backend);
			return errmsg(r, err, errlen, "--disk %s: %s", d->path, strerror(-r));
		}
		vm->n_blks = i + 1;
		vm->blk_slots[i] = (struct vm_device){ .vm = vm, .index = i };
		if (pci)
			snprintf(what, sizeof(what), "virtio-blk@pci-%u", ++n_pci);
		else
			snprintf(what, sizeof(what), "virtio-blk@0x%llx",
				 VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_STRIDE);
		if (vm_register(vm, what, &disk_ops, &vm->blk_slots[i]))
			return errmsg(-ENOSPC, err, errlen, "too many components");
		snprintf(what, sizeof(what), "--disk %s", d->path);
		r = vm_attach_mmio(vm, &vm->blk_mmio[i], pci ? &vm->blk_pci[i] : NULL,
				   &vm->blks[i].dev, i, what, err, errlen);
		if (r)
			return r;
	}
	return 0;
}

/* Open every --net tap and build its virtio-net device, after the disks. */
static int vm_build_nets(struct vm *vm, char *err, size_t errlen)
{
	const struct vm_config *cfg = vm->cfg;
	unsigned n_pci = 0;

	for (unsigned i = 0; i < cfg->n_disks; i++)
		n_pci += cfg->disks[i].transport == VIRTIO_TRANSPORT_PCI;
	if (!cfg->n_nics)
		goto out;
	vm->nets = calloc(cfg->n_nics, sizeof(*vm->nets));
	vm->net_mmio = calloc(cfg->n_nics, sizeof(*vm->net_mmio));
	if (!vm->nets || !vm->net_mmio)
		return errmsg(-ENOMEM, err, errlen, "out of memory");
	for (unsigned j = 0; j < cfg->n_nics; j++) {
		const struct net_config *nc = &cfg->nics[j];
		struct virtio_net_config_opts opts = { .tap = nc->tap, .mac_given = nc->mac_given,
						       .index = j, .queues = nc->queues };
		bool pci = nc->transport == VIRTIO_TRANSPORT_PCI;
		char what[48];
		int r;

		memcpy(opts.mac, nc->mac, sizeof(opts.mac));
		r = virtio_net_init(&vm->nets[j], &vm->mem, &vm->loop, &opts, err, errlen);
		if (r)
			return r;
		vm->n_nets = j + 1;
		vm->net_slots[j] = (struct vm_device){ .vm = vm, .index = j };
		if (pci)
			snprintf(what, sizeof(what), "virtio-net@pci-%u", ++n_pci);
		else
			snprintf(what, sizeof(what), "virtio-net@0x%llx",
				 VIRTIO_MMIO_BASE + (cfg->n_disks + j) * VIRTIO_MMIO_STRIDE);
		if (vm_register(vm, what, &nic_ops, &vm->net_slots[j]))
			return errmsg(-ENOSPC, err, errlen, "too many components");
		snprintf(what, sizeof(what), "--net tap=%s", nc->tap);
		r = vm_attach_mmio(vm, &vm->net_mmio[j], pci ? &vm->net_pci[j] : NULL,
				   &vm->nets[j].dev, cfg->n_disks + j, what, err, errlen);
		if (r)
			return r;
	}
out:
	/* As firmware leaves them: every BAR decoded where vmrun put it (a
	 * restore then loads what the guest had). */
	pci_bus_enable_all(&vm->pci);
	return 0;
}

/* ---- ACPI and pvpanic (vmrun/acpi.h, vmrun/pvpanic.h) ---- */

static void comp_pvpanic_save(void *obj, struct state_writer *w) { pvpanic_save(obj, w); }
static int comp_pvpanic_load(void *obj, struct state_reader *r) { return pvpanic_load(obj, r); }

static const struct vm_component_ops pvpanic_comp_ops = {
	.save = comp_pvpanic_save, .load = comp_pvpanic_load,
};

/* The platform devices after the virtio ones (so that their PCI slots stay
 * where snapshots from before pvpanic have them): ACPI's PM1 and reset
 * registers unless --acpi off, pvpanic (its ISA port and its PCI function)
 * unless --no-pvpanic.  Neither keeps state but pvpanic's configuration
 * space. */
static int vm_build_platform(struct vm *vm, char *err, size_t errlen)
{
	int r;

	if (!vm->cfg->no_acpi) {
		acpi_pm_init(&vm->acpi_pm, &vm->dev_host);
		if ((r = bus_register(&vm->pio_bus, &vm->acpi_pm.region)))
			return errmsg(r, err, errlen, "cannot claim the ACPI ports: %s", strerror(-r));
	}
	if (vm->cfg->no_pvpanic)
		return 0;
	if ((r = pvpanic_init(&vm->pvpanic, &vm->dev_host)))
		return errmsg(r, err, errlen, "pvpanic: %s", strerror(-r));
	if ((r = bus_register(&vm->pio_bus, &vm->pvpanic.isa_region)))
		return errmsg(r, err, errlen, "cannot claim the pvpanic port: %s", strerror(-r));
	r = pci_bus_add(&vm->pci, &vm->pvpanic.fn);
	if (r < 0)
		return errmsg(r, err, errlen, "pvpanic: no free PCI slot");
	if (vm_register(vm, "pvpanic", &pvpanic_comp_ops, &vm->pvpanic))
		return errmsg(-ENOSPC, err, errlen, "too many components");
	/* Decoded where vmrun put it, as the virtio functions. */
	pci_bus_enable_all(&vm->pci);
	return 0;
}

/* First boot: the ACPI tables in the reserved BIOS area, and their place
 * told to the kernel (unless --acpi off). */
static int vm_write_acpi(struct vm *vm, char *err, size_t errlen)
{
	struct acpi_machine m = { .ncpus = vm->n_vcpus, .pvpanic = !vm->cfg->no_pvpanic };
	uint8_t *buf;
	int r;

	if (vm->cfg->no_acpi)
		return 0;
	buf = guest_mem_ptr(&vm->mem, ACPI_TABLES_GPA, ACPI_TABLES_MAX);
	r = buf ? acpi_tables_build(buf, ACPI_TABLES_MAX, ACPI_TABLES_GPA, &m) : -EFAULT;
	if (r >= 0)
		r = boot_set_acpi_rsdp(&vm->mem, &vm->boot, ACPI_TABLES_GPA);
	if (r < 0)
		return errmsg(r, err, errlen, "cannot write the ACPI tables: %s", strerror(-r));
	return 0;
}

/* boot_load() with the command line the guest gets: the user's, plus the
 * nested-host kernel arguments for a Linux kernel (vmrun/nested.h). */
static int vm_load_kernel(struct vm *vm, char *err, size_t errlen)
{
	struct vm_config boot_cfg = *vm->cfg;
	char with_devices[VMRUN_CMDLINE_MAX], cmdline[VMRUN_CMDLINE_MAX];
	const char *user = vm->cfg->cmdline ? vm->cfg->cmdline : "";
	int r, n;

	/* The user's words first, then the devices vmrun declares. */
	n = snprintf(with_devices, sizeof(with_devices), "%s%s%s", user,
		     *user && vm->device_cmdline[0] ? " " : "", vm->device_cmdline);
	if (n < 0 || (size_t)n >= sizeof(with_devices))
		return errmsg(-E2BIG, err, errlen,
			      "--cmdline and the device declarations exceed %d bytes",
			      VMRUN_CMDLINE_MAX - 1);
	boot_cfg.cmdline = with_devices;
	r = nested_guest_cmdline(&boot_cfg, vm->nested_workarounds, cmdline, sizeof(cmdline), err,
				 errlen);
	if (r)
		return r;
	boot_cfg.cmdline = cmdline;
	r = boot_load(&vm->mem, &boot_cfg, &vm->boot, err, errlen);
	if (!r)
		r = vm_write_acpi(vm, err, errlen);
	return r;
}

/* Restore: every component's saved state, in build order (vCPUs, then the
 * irqchip, PIT and clock, then devices), after which the devices stay
 * quiesced until vm_run() starts the guest. */
int vm_load_components(struct vm *vm, struct state_reader *r, char *err, size_t errlen)
{
	for (unsigned i = 0; i < vm->n_comps; i++) {
		const struct vm_component *c = &vm->comps[i];

		if (c->ops->load && c->ops->load(c->obj, r))
			return errmsg(r->err ? r->err : -EINVAL, err, errlen, "%s",
				      r->msg[0] ? r->msg : "cannot load the saved state");
	}
	vm->devices_quiesced = false;
	vm_quiesce(vm);
	return 0;
}

int vm_take_disks(struct vm *vm, char *err, size_t errlen)
{
	for (unsigned i = 0; i < vm->n_blks; i++) {
		const struct disk_config *d = &vm->cfg->disks[i];
		struct blk_open_opts opts = disk_open_opts(d);
		struct blk *fresh, *old = NULL;
		char why[300];
		int r = blk_open(d->path, &opts, &vm->loop, &fresh, why, sizeof(why));

		if (r)
			return errmsg(r, err, errlen, "disk %u: %s", i, why);
		r = virtio_blk_replace_backend(&vm->blks[i], fresh, &old);
		if (r) {
			blk_close(fresh);
			return errmsg(r, err, errlen, "disk %u: %s changed size or writability during the migration",
				      i, d->path);
		}
		blk_close(old);
	}
	return 0;
}

/* vm_call_on_loop()'s eventfd: run the pending call. */
static void on_loop_call(struct ev_source *src, uint32_t events)
{
	struct vm *vm = src->opaque;
	struct vm_loop_call *c;
	uint64_t n;

	(void)events;
	(void)!read(src->fd, &n, sizeof(n));
	pthread_mutex_lock(&vm->call_lock);
	c = vm->call_pending;
	pthread_mutex_unlock(&vm->call_lock);
	if (!c)
		return;
	c->result = c->fn(vm, c->arg);
	pthread_mutex_lock(&vm->call_lock);
	c->done = true;
	vm->call_pending = NULL;
	pthread_cond_broadcast(&vm->call_cond);
	pthread_mutex_unlock(&vm->call_lock);
}

int vm_call_on_loop(struct vm *vm, int (*fn)(struct vm *vm, void *arg), void *arg)
{
	struct vm_loop_call c = { .fn = fn, .arg = arg };
	uint64_t one = 1;
	int r;

	pthread_mutex_lock(&vm->call_lock);
	while (vm->call_pending && !vm->calls_closed)
		pthread_cond_wait(&vm->call_cond, &vm->call_lock);
	if (vm->calls_closed) {
		pthread_mutex_unlock(&vm->call_lock);
		return -ECANCELED;
	}
	vm->call_pending = &c;
	(void)!write(vm->call_eventfd, &one, sizeof(one));
	while (!c.done && !vm->calls_closed)
		pthread_cond_wait(&vm->call_cond, &vm->call_lock);
	if (!c.done)
		vm->call_pending = NULL; /* the loop stopped first: never ran */
	r = c.done ? c.result : -ECANCELED;
	pthread_cond_broadcast(&vm->call_cond);
	pthread_mutex_unlock(&vm->call_lock);
	return r;
}

/* The loop has stopped: every call waiting, and every later one, fails. */
static void vm_close_calls(struct vm *vm)
{
	pthread_mutex_lock(&vm->call_lock);
	vm->calls_closed = true;
	pthread_cond_broadcast(&vm->call_cond);
	pthread_mutex_unlock(&vm->call_lock);
}

int vm_build(struct vm *vm, const struct vm_config *cfg, struct snapshot *restore, char *err,
	     size_t errlen)
{
	struct timespec process_start = vm->process_start;
	bool start_paused = vm->start_paused;
	int r;

	memset(vm, 0, sizeof(*vm));
	vm->cfg = cfg;
	vm->restore = restore;
	vm->process_start = process_start;
	vm->start_paused = start_paused;
	vm->kvm_fd = vm->vm_fd = vm->exit_eventfd = vm->rx_eventfd = -1;
	vm->loop.epfd = -1;
	vm->console.out_fd = vm->console.in_fd = vm->console.log_fd = -1;
	vm->signal_src.fd = vm->timer_src.fd = vm->halt_watch_src.fd = -1;
	vm->call_eventfd = -1;
	pthread_mutex_init(&vm->state_lock, NULL);
	pthread_mutex_init(&vm->call_lock, NULL);
	pthread_cond_init(&vm->call_cond, NULL);
	pthread_cond_init(&vm->state_cond, NULL);
	pthread_cond_init(&vm->ack_cond, NULL);
	bus_init(&vm->pio_bus, "port");
	bus_init(&vm->mmio_bus, "mmio");
	clock_gettime(CLOCK_MONOTONIC, &vm->started);

	vm->exit_eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	vm->rx_eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	vm->call_eventfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->exit_eventfd < 0 || vm->rx_eventfd < 0 || vm->call_eventfd < 0)
		return errmsg(-errno, err, errlen, "eventfd: %s", strerror(errno));
	r = kvm_open(vm, err, errlen);
	if (!r)
		r = kvm_check_caps(vm, err, errlen);
	if (!r)
		r = kvm_create_vm(vm, err, errlen);
	if (r)
		return r;
	vm->nested_workarounds = nested_workarounds_enable(cfg);
	/* ---- the machine's shape ---- */
	r = restore && restore->mem_fd >= 0 ?
		    guest_mem_init_file(&vm->mem, cfg->mem_size, restore->mem_fd) :
		    guest_mem_init(&vm->mem, cfg->mem_size);
	if (r)
		return errmsg(r, err, errlen, "cannot map %llu MiB of guest RAM: %s",
				  (unsigned long long)(cfg->mem_size >> 20), strerror(-r));
	r = guest_mem_register(&vm->mem, vm->vm_fd);
	if (r)
		return errmsg(r, err, errlen, "KVM_SET_USER_MEMORY_REGION: %s", strerror(-r));
	r = kvm_create_irqchip(vm, err, errlen);
	if (r)
		return r;
	r = vm_build_vcpus(vm, err, errlen);
	if (r)
		return r;
	r = console_open(&vm->console, cfg, err, errlen);
	if (r)
		return r;
	/* Devices attach their event sources as they are built. */
	r = evloop_init(&vm->loop);
	if (r)
		return errmsg(r, err, errlen, "epoll: %s", strerror(-r));
	r = vm_build_devices(vm, err, errlen);
	if (r)
		return r;
	r = vm_build_disks(vm, err, errlen);
	if (!r)
		r = vm_build_nets(vm, err, errlen);
	if (!r)
		r = vm_build_platform(vm, err, errlen);
	if (r)
		return r;
	/* ---- its contents ---- */
	if (restore && restore->incoming)
		return 0; /* the migration stream brings them (vm_load_components()) */
	if (restore)
		return vm_load_components(vm, &restore->r, err, errlen);
	r = vm_load_kernel(vm, err, errlen);
	if (r)
		return r;
	return vm_boot_vcpu(vm, err, errlen);
}

/* ---- the run loop ---- */

/* Milliseconds since the VM started. */
static int64_t vm_uptime_ms(struct vm *vm)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)(now.tv_sec - vm->started.tv_sec) * 1000 +
	       (now.tv_nsec - vm->started.tv_nsec) / 1000000;
}

static json_t *ctl_query_status(void *opaque)
{
	struct vm *vm = opaque;
	json_t *vcpus = json_array(), *disks = json_array(), *nets = json_array();
	bool paused = vcpus_paused(vm), any_parked = false;
	int64_t uptime_ms;

	pthread_mutex_lock(&vm->state_lock);
	for (unsigned i = 0; i < vm->n_vcpus; i++) {
		const struct vcpu *v = &vm->vcpus[i];
		const char *state = v->finished ? "stopped" : v->parked ? "paused" : "running";

		any_parked |= v->parked && !v->finished;
		json_array_append_new(vcpus, json_pack("{s:i,s:s}", "id", (int)i, "state", state));
	}
	pthread_mutex_unlock(&vm->state_lock);
	for (unsigned i = 0; i < vm->n_comps; i++) {
		const struct vm_component *c = &vm->comps[i];
		json_t *o = c->ops->query ? c->ops->query(c->obj) : NULL;

		if (o)
			json_array_append_new(!strcmp(c->ops->group, "disks") ? disks : nets, o);
	}
	uptime_ms = vm_uptime_ms(vm);
	/* "running" only when no vCPU is parked: a resume answers after every
	 * vCPU left its pause (vcpus_resume), so this holds in its reply. */
	return json_pack("{s:s,s:o,s:o,s:o,s:I,s:i,s:I,s:f}", "status",
			 atomic_load(&vm->exiting) ? "shutting-down" :
			 paused || any_parked	   ? "paused" :
						     "running",
			 "vcpus", vcpus, "disks", disks, "nets", nets, "mem_bytes",
			 (json_int_t)vm->cfg->mem_size, "cpus", (int)vm->n_vcpus, "uptime_ms",
			 (json_int_t)uptime_ms, "uptime_s", (double)uptime_ms / 1000.0);
}

static int ctl_pause(void *opaque)
{
	struct vm *vm = opaque;
	int r = vm_pause(vm);

	if (!r && vm->control_active)
		control_emit_event(&vm->control, "paused", NULL);
	return r;
}

static int ctl_resume(void *opaque)
{
	struct vm *vm = opaque;

	/* The stop-and-copy has the guest: it resumes it itself if it fails. */
	if (migrate_stopping(vm))
		return -EBUSY;
	vm_resume(vm);
	if (vm->control_active)
		control_emit_event(&vm->control, "resumed", NULL);
	return 0;
}

static int ctl_nmi(void *opaque)
{
	vcpus_nmi(opaque);
	return 0;
}

static int ctl_quit(void *opaque)
{
	vm_request_exit_as(opaque, VMRUN_EXIT_POWEROFF, true, "quit");
	return 0;
}

int vm_disk_freeze(struct vm *vm, unsigned i, char *base, size_t baselen, char *err,
		   size_t errlen)
{
	struct blk_open_opts opts = disk_open_opts(&vm->cfg->disks[i]);

	return disk_snapshot_live(&vm->blks[i], vm->cfg->disks[i].path, &opts, &vm->loop, base,
				  baselen, err, errlen);
}

/* "snapshot" {"disk": INDEX or the --disk path}; the disk may be left out
 * when there is only one.  Runs on the event loop thread, which is the
 * disks' thread (include/vmrun/disk_snapshot.h). */
static json_t *ctl_disk_snapshot(void *opaque, json_t *args, char *err, size_t errlen)
{
	struct vm *vm = opaque;
	json_t *which = json_object_get(args, "disk");
	char base[PATH_MAX];
	unsigned i = vm->n_blks;
	int r;

	if (migrate_running(vm)) {
		errmsg(-EBUSY, err, errlen, "a migration is running (migrate-cancel it first)");
		return NULL;
	}

	if (!vm->n_blks) {
		errmsg(-ENODEV, err, errlen, "this VM has no disks");
		return NULL;
	}
	if (!which && vm->n_blks == 1) {
		i = 0;
	} else if (json_is_integer(which)) {
		if (json_integer_value(which) >= 0 && json_integer_value(which) < vm->n_blks)
			i = (unsigned)json_integer_value(which);
	} else if (json_is_string(which)) {
		const char *w = json_string_value(which);
		char *end;
		unsigned long n = strtoul(w, &end, 10);

		if (*w >= '0' && *w <= '9' && !*end) {
			if (n < vm->n_blks)
				i = (unsigned)n;
		} else {
			/* The path as given, or as query-status shows it. */
			for (unsigned k = 0; k < vm->n_blks && i == vm->n_blks; k++) {
				char *shown = utf8_make_valid_dup(vm->cfg->disks[k].path);

				if (!strcmp(vm->cfg->disks[k].path, w) || (shown && !strcmp(shown, w)))
					i = k;
				free(shown);
			}
		}
	}
	if (i == vm->n_blks) {
		errmsg(-EINVAL, err, errlen, "\"disk\": give a disk index 0..%u or a --disk path",
		       vm->n_blks - 1);
		return NULL;
	}
	r = vm_disk_freeze(vm, i, base, sizeof(base), err, errlen);
	if (r)
		return NULL;
	/* The snapshot is taken: its report must not be lost to a path that
	 * is not UTF-8 (jansson refuses those), so both are made valid. */
	if (vm->control_active)
		control_emit_event(&vm->control, "disk-snapshot",
				   json_pack("{s:i,s:o,s:o}", "disk", (int)i, "image",
					     utf8_json_string(vm->cfg->disks[i].path), "base",
					     utf8_json_string(base)));
	return json_pack("{s:i,s:o,s:o}", "disk", (int)i, "image",
			 utf8_json_string(vm->cfg->disks[i].path), "base", utf8_json_string(base));
}

/* "save" {"path": DIR}: pause (unless paused), quiesce, save, and leave
 * the VM as it was.  Runs on the event loop thread, the devices' thread. */
static json_t *ctl_save(void *opaque, json_t *args, char *err, size_t errlen)
{
	struct vm *vm = opaque;
	json_t *path = json_object_get(args, "path"), *res = NULL;
	bool was_paused = vcpus_paused(vm);
	struct timespec t0, t1;
	int r;

	if (migrate_running(vm)) {
		errmsg(-EBUSY, err, errlen, "a migration is running (migrate-cancel it first)");
		return NULL;
	}

	if (!json_is_string(path) || !json_string_value(path)[0]) {
		errmsg(-EINVAL, err, errlen, "\"path\": the snapshot directory to create");
		return NULL;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (!was_paused && (r = vm_pause(vm))) {
		vcpus_resume(vm);
		errmsg(r, err, errlen, "cannot pause the vCPUs: %s", strerror(-r));
		return NULL;
	}
	r = vm_save(vm, json_string_value(path), &res, err, errlen);
	if (!was_paused)
		vm_resume(vm);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (r)
		return NULL;
	/* How long the guest stood still for this save (0 when it was paused). */
	json_object_set_new(res, "paused_ms",
			    json_real(was_paused ? 0.0 :
				      (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
					      (double)(t1.tv_nsec - t0.tv_nsec) / 1e6));
	if (vm->control_active)
		control_emit_event(&vm->control, "saved", json_deep_copy(res));
	return res;
}

static int ctl_migrate(void *opaque, json_t *args, struct control_deferred *later, char *err,
		       size_t errlen)
{
	return migrate_start(opaque, args, later, err, errlen);
}

static json_t *ctl_query_migrate(void *opaque)
{
	return migrate_query(opaque);
}

static int ctl_migrate_cancel(void *opaque, char *err, size_t errlen)
{
	return migrate_cancel(opaque, err, errlen);
}

static const struct control_ops vm_control_ops = {
	.save = ctl_save,
	.migrate = ctl_migrate,
	.query_migrate = ctl_query_migrate,
	.migrate_cancel = ctl_migrate_cancel,
	.query_status = ctl_query_status,
	.pause = ctl_pause,
	.resume = ctl_resume,
	.quit = ctl_quit,
	.nmi = ctl_nmi,
	.disk_snapshot = ctl_disk_snapshot,
};

static void on_exit_event(struct ev_source *src, uint32_t events)
{
	struct vm *vm = src->opaque;
	uint64_t n;

	(void)!read(src->fd, &n, sizeof(n));
	if (atomic_load(&vm->exiting))
		vm->loop.stop = true;
}

static void on_signal(struct ev_source *src, uint32_t events)
{
	struct vm *vm = src->opaque;
	struct signalfd_siginfo si;
	char reason[32];

	if (read(src->fd, &si, sizeof(si)) != sizeof(si))
		return;
	snprintf(reason, sizeof(reason), "signal SIG%s", sigabbrev_np((int)si.ssi_signo));
	vm_request_exit(vm, VMRUN_EXIT_SIGNAL, reason);
}

static void on_timeout(struct ev_source *src, uint32_t events)
{
	struct vm *vm = src->opaque;
	uint64_t n;

	(void)!read(src->fd, &n, sizeof(n));
	log_error("timeout: the guest ran for %g s (--timeout)", vm->cfg->timeout_s);
	vm_request_exit(vm, VMRUN_EXIT_TIMEOUT, "timeout");
}

static void on_halt_watch(struct ev_source *src, uint32_t events)
{
	uint64_t n;

	(void)events;
	(void)!read(src->fd, &n, sizeof(n));
	vm_halt_watch_check(src->opaque);
}

/* Check for a guest that halted for good this often (vm_halt_watch_check):
 * the longest a halted guest outlives its last instruction. */
#define HALT_WATCH_PERIOD_NS 250000000L

static int vm_start_halt_watch(struct vm *vm, char *err, size_t errlen)
{
	struct itimerspec its = {
		.it_value = { .tv_nsec = HALT_WATCH_PERIOD_NS },
		.it_interval = { .tv_nsec = HALT_WATCH_PERIOD_NS },
	};
	int r;

	vm->halt_watch_src = (struct ev_source){ .handler = on_halt_watch, .opaque = vm };
	vm->halt_watch_src.fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (vm->halt_watch_src.fd < 0 || timerfd_settime(vm->halt_watch_src.fd, 0, &its, NULL) < 0)
		return errmsg(-errno, err, errlen, "timerfd: %s", strerror(errno));
	if ((r = evloop_add(&vm->loop, &vm->halt_watch_src, EPOLLIN)))
		return errmsg(r, err, errlen, "epoll: %s", strerror(-r));
	return 0;
}

/* Move stdin bytes into the UART as far as it has room.  Watching stdin
 * stops while the UART is full, and resumes from on_rx_ready(). */
static void console_pump(struct vm *vm)
{
	uint8_t in[128], out[sizeof(in) + 1];
	bool quit;

	while (vm->stdin_open) {
		size_t space = serial_rx_space(&vm->serial), want, n_out;
		ssize_t n;

		if (space < SERIAL_RX_LOW_WATER) {
			if (vm->stdin_polled)
				evloop_modify(&vm->loop, &vm->stdin_src, 0);
			return;
		}
		want = space - 1 < sizeof(in) ? space - 1 : sizeof(in);
		n = read(vm->console.in_fd, in, want);
		if (n < 0 && (errno == EINTR))
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			/* EOF or error: the guest keeps running without input. */
			if (vm->stdin_polled)
				evloop_remove(&vm->loop, &vm->stdin_src);
			vm->stdin_open = false;
			return;
		}
		n_out = console_filter_input(&vm->console, in, (size_t)n, out, &quit);
		serial_receive(&vm->serial, out, n_out);
		if (quit) {
			vm_request_exit_as(vm, VMRUN_EXIT_POWEROFF, true, "quit (Ctrl-A x)");
			return;
		}
		if (vm->stdin_polled)
			return; /* one read per readiness: stdin may be blocking */
	}
}

static void on_stdin(struct ev_source *src, uint32_t events)
{
	console_pump(src->opaque);
}

static void on_rx_ready(struct ev_source *src, uint32_t events)
{
	struct vm *vm = src->opaque;
	uint64_t n;

	(void)!read(src->fd, &n, sizeof(n));
	if (vm->stdin_open && vm->stdin_polled)
		evloop_modify(&vm->loop, &vm->stdin_src, EPOLLIN);
	else
		console_pump(vm);
}

static int vm_watch_stdin(struct vm *vm)
{
	int r;

	if (vm->console.in_fd < 0)
		return 0;
	vm->stdin_src = (struct ev_source){ .fd = vm->console.in_fd, .handler = on_stdin, .opaque = vm };
	vm->stdin_open = true;
	r = evloop_add(&vm->loop, &vm->stdin_src, EPOLLIN);
	if (r == -EPERM) {
		/* A regular file: always readable, epoll refuses it.  It is
		 * read whenever the UART has room. */
		vm->stdin_polled = false;
		console_pump(vm);
		return 0;
	}
	vm->stdin_polled = r == 0;
	if (r)
		vm->stdin_open = false;
	return 0;
}

static int vm_setup_loop(struct vm *vm, char *err, size_t errlen)
{
	sigset_t sigs;
	int r, fd;

	vm->exit_src = (struct ev_source){ .fd = vm->exit_eventfd, .handler = on_exit_event, .opaque = vm };
	vm->rx_src = (struct ev_source){ .fd = vm->rx_eventfd, .handler = on_rx_ready, .opaque = vm };
	vm->call_src = (struct ev_source){ .fd = vm->call_eventfd, .handler = on_loop_call, .opaque = vm };
	if ((r = evloop_add(&vm->loop, &vm->exit_src, EPOLLIN)) ||
	    (r = evloop_add(&vm->loop, &vm->rx_src, EPOLLIN)) ||
	    (r = evloop_add(&vm->loop, &vm->call_src, EPOLLIN)))
		return errmsg(r, err, errlen, "epoll: %s", strerror(-r));

	/* main() blocked these signals just before vm_run(), before any thread
	 * existed; what arrived since waits in the signalfd. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	fd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);
	if (fd < 0)
		return errmsg(-errno, err, errlen, "signalfd: %s", strerror(errno));
	vm->signal_src = (struct ev_source){ .fd = fd, .handler = on_signal, .opaque = vm };
	if ((r = evloop_add(&vm->loop, &vm->signal_src, EPOLLIN)))
		return errmsg(r, err, errlen, "epoll: %s", strerror(-r));

	if (vm->cfg->timeout_s > 0) {
		double t = vm->cfg->timeout_s;
		struct itimerspec its = {
			.it_value = { .tv_sec = (time_t)t,
				      .tv_nsec = (long)((t - (double)(time_t)t) * 1e9) },
		};

		if (!its.it_value.tv_sec && !its.it_value.tv_nsec)
			its.it_value.tv_nsec = 1;
		fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
		if (fd < 0 || timerfd_settime(fd, 0, &its, NULL) < 0)
			return errmsg(-errno, err, errlen, "timerfd: %s", strerror(errno));
		vm->timer_src = (struct ev_source){ .fd = fd, .handler = on_timeout, .opaque = vm };
		if ((r = evloop_add(&vm->loop, &vm->timer_src, EPOLLIN)))
			return errmsg(r, err, errlen, "epoll: %s", strerror(-r));
	}
	if ((r = vm_start_halt_watch(vm, err, errlen)))
		return r;
	if (vm->cfg->api_sock) {
		r = control_init(&vm->control, &vm->loop, vm->cfg->api_sock, &vm_control_ops, vm,
				 err, errlen);
		if (r)
			return r;
		vm->control_active = true;
	}
	return vm_watch_stdin(vm);
}

/* Put the in-kernel PIT in !reinject mode, which KVM's API documentation
 * recommends for every guest that does not keep time by counting PIT ticks
 * (Linux 2.4 did).  Leaving reinject mode unregisters an IRQ-ack notifier and
 * waits for an SRCU grace period (10-20 ms measured on a nested host); done
 * here, after the vCPUs started, that wait overlaps the guest's own work
 * instead of delaying start-up, or exit (where destroying a PIT still in
 * reinject mode pays the same wait). */
static void vm_pit_disable_reinject(struct vm *vm)
{
	struct kvm_reinject_control ctl = { .pit_reinject = 0 };

	if (ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_REINJECT_CONTROL) <= 0)
		return;
	if (ioctl(vm->vm_fd, KVM_REINJECT_CONTROL, &ctl) < 0)
		log_warn("KVM_REINJECT_CONTROL: %s", strerror(errno));
}

/* The kind of end for @status (vmrun_exit_kind()), "quit" for the
 * operator's.  After the vCPUs stopped. */
static const char *exit_kind(const struct vm *vm, int status)
{
	if (status == VMRUN_EXIT_POWEROFF && vm->migrated_away)
		return "migrated";
	return status == VMRUN_EXIT_POWEROFF && vm->exit_quit ? "quit" : vmrun_exit_kind(status);
}

/* The guest's debug-exit write behind @status, if that is what ended the
 * run: *value gets the raw 32-bit value. */
static bool exit_debug_value(const struct vm *vm, int status, uint32_t *value)
{
	if (!(status & 1) || !atomic_load(&vm->debug_exit.fired))
		return false;
	*value = vm->debug_exit.value;
	return true;
}

void vm_exit_report(const struct vm *vm, int status, struct exit_report *rep)
{
	rep->status = status;
	rep->kind = exit_kind(vm, status);
	rep->has_debug_exit = exit_debug_value(vm, status, &rep->debug_exit_value);
	rep->reason = vm->exit_reason;
	rep->ms_to_first_instruction =
		vm->entered ? exit_report_ms(&vm->process_start, &vm->first_run) : -1;
	rep->ms_to_first_output =
		vm->serial.tx_seen ? exit_report_ms(&vm->process_start, &vm->serial.first_tx) : -1;
}

/* The one line on stderr saying why the run ended, where vmrun ended it and
 * nothing else said so: a signal or every vCPU halted for good (a timeout
 * says so as it fires, a guest fault with its registers). */
static void vm_log_end(const struct vm *vm, int status)
{
	if (status == VMRUN_EXIT_SIGNAL)
		log_info("stopped by %s", vm->exit_reason + strlen("signal "));
	else if (status == VMRUN_EXIT_HLT)
		log_info("stopped: every vCPU halted with interrupts off; nothing can wake the guest");
}

int vm_run(struct vm *vm)
{
	char err[512];
	int r, status;
	json_t *data;
	uint32_t dv;

	r = vm_setup_loop(vm, err, sizeof(err));
	/* Everything privileged is open now (/dev/kvm, memory, taps, disks,
	 * sockets, console): confine before the first vCPU thread exists, so
	 * that every thread inherits it (vmrun/sandbox.h). */
	if (!r && !(r = sandbox_prepare(&vm->sandbox, vm->cfg->seccomp, vm->cfg->user, err,
					sizeof(err))))
		r = sandbox_confine(&vm->sandbox, err, sizeof(err));
	if (r) {
		log_error("%s", err);
		snprintf(vm->exit_reason, sizeof(vm->exit_reason), "%.63s", err); /* --exit-json */
		return VMRUN_EXIT_SETUP;
	}
	if (vm->nested_workarounds)
		nested_print_banner(); /* once, now that the guest is about to run */
	console_enter_raw(&vm->console);
	if (vm->start_paused) {
		/* Every vCPU parks before its first KVM_RUN; devices stay
		 * quiesced until "resume". */
		pthread_mutex_lock(&vm->state_lock);
		vm->request = VCPU_PAUSE;
		pthread_mutex_unlock(&vm->state_lock);
		vm_quiesce(vm);
	} else {
		vm_resume_devices(vm);
	}
	r = vcpus_start(vm);
	if (!r && vm->restore && vm->restore->incoming) {
		/* Switches learn where the guest went (three times, as QEMU's
		 * announce; a lost frame only delays the learning). */
		for (int k = 0; k < 3; k++)
			for (unsigned j = 0; j < vm->n_nets; j++)
				if (virtio_net_announce(&vm->nets[j]) && k == 0)
					log_warn("nic %u: cannot announce the guest after the migration", j);
	}
	if (!r && vm->restore) {
		struct timespec now;

		clock_gettime(CLOCK_MONOTONIC, &now);
		log_info("%s %s: vCPUs %s %.2f ms after start",
			 vm->restore->incoming ? "migrated from" : "restored from", vm->restore->dir,
			 vm->start_paused ? "ready (paused)" : "running",
			 (double)(now.tv_sec - vm->process_start.tv_sec) * 1e3 +
				 (double)(now.tv_nsec - vm->process_start.tv_nsec) / 1e6);
	}
	if (r) {
		log_error("cannot start vCPU threads: %s", strerror(-r));
		vm_request_exit(vm, VMRUN_EXIT_HOST_ERROR, "thread creation failed");
	} else {
		/* The guest runs (or waits for "resume" with --paused) and the
		 * control socket listens: tell a Type=notify supervisor. */
		int nr = notify_send(getenv("NOTIFY_SOCKET"), "READY=1");

		if (nr)
			log_warn("NOTIFY_SOCKET: cannot send READY=1: %s", strerror(-nr));
	}
	vm_pit_disable_reinject(vm);
	/* The main thread's run phase: the event loop, the devices and the
	 * control socket, under its filter from here on. */
	r = sandbox_enter(&vm->sandbox, SANDBOX_MAIN);
	if (r) {
		log_error("seccomp: cannot load the main thread's filter: %s", strerror(-r));
		vm_request_exit(vm, VMRUN_EXIT_HOST_ERROR, "seccomp filter failed");
	}
	if (!atomic_load(&vm->exiting)) {
		r = evloop_run(&vm->loop);
		if (r) {
			log_error("event loop: %s", strerror(-r));
			vm_request_exit(vm, VMRUN_EXIT_HOST_ERROR, "event loop failed");
		}
	}
	/* An outgoing migration still running ends here (failed: the guest
	 * stops); its thread must not wait on this loop any more. */
	vm_close_calls(vm);
	migrate_shutdown(vm);
	vcpus_stop(vm);
	console_restore(&vm->console);

	pthread_mutex_lock(&vm->state_lock);
	status = vm->exit_status;
	pthread_mutex_unlock(&vm->state_lock);
	vm_log_end(vm, status);
	if (vm->control_active) {
		if (status == VMRUN_EXIT_RESET)
			control_emit_event(&vm->control, "reset", json_pack("{s:s}", "reason",
									    vm->exit_reason));
		/* With the raw value the guest wrote, which the status
		 * truncates to 7 bits. */
		data = json_pack("{s:s,s:s,s:i}", "kind", exit_kind(vm, status), "reason",
				 vm->exit_reason, "status", status);
		json_object_set_new(data, "debug_exit_value",
				    exit_debug_value(vm, status, &dv) ? json_integer((json_int_t)dv) :
									json_null());
		control_emit_event(&vm->control, "guest-exit", data);
	}
	return status;
}

void vm_destroy(struct vm *vm)
{
	/* Components in reverse build order: devices (each disk drains first,
	 * its last completions still raise interrupts), then the vCPUs. */
	for (unsigned i = vm->n_comps; i-- > 0;)
		if (vm->comps[i].ops->destroy)
			vm->comps[i].ops->destroy(vm->comps[i].obj);
	vm->n_comps = 0;
	free(vm->blks);
	free(vm->blk_mmio);
	free(vm->nets);
	free(vm->net_mmio);
	if (vm->control_active)
		control_exit(&vm->control);
	vm->control_active = false;
	vm_forget_pause_state(vm);
	sandbox_exit(&vm->sandbox);
	free(vm->cpuid);
	vm->cpuid = NULL;
	if (vm->signal_src.fd >= 0)
		close(vm->signal_src.fd);
	if (vm->timer_src.fd >= 0)
		close(vm->timer_src.fd);
	if (vm->halt_watch_src.fd >= 0)
		close(vm->halt_watch_src.fd);
	evloop_exit(&vm->loop);
	console_close(&vm->console);
	guest_mem_exit(&vm->mem);
	bus_exit(&vm->pio_bus);
	bus_exit(&vm->mmio_bus);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	if (vm->exit_eventfd >= 0)
		close(vm->exit_eventfd);
	if (vm->rx_eventfd >= 0)
		close(vm->rx_eventfd);
	if (vm->call_eventfd >= 0)
		close(vm->call_eventfd);
	pthread_cond_destroy(&vm->call_cond);
	pthread_mutex_destroy(&vm->call_lock);
	pthread_cond_destroy(&vm->state_cond);
	pthread_cond_destroy(&vm->ack_cond);
	pthread_mutex_destroy(&vm->state_lock);
}
