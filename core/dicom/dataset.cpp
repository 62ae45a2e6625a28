// Dataset handles: create, read, clone, save, free, dump.
#include "internal.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <sys/stat.h>

#include <dcmtk/dcmdata/dcistrmb.h>

rtb_ds *rtb_ds::view_of(DcmItem *child)
{
    // Handles for sequence items live in the root, so that the same item always
    // yields the same handle and the caller never frees one.
    auto &slot = root->views[child];
    if (!slot) {
        slot.reset(new rtb_ds());
        slot->item = child;
        slot->borrowed = true;
        slot->root = root;
    }
    return slot.get();
}

namespace rtb {

std::unique_ptr<rtb_ds> make_root(std::unique_ptr<DcmFileFormat> file)
{
    std::unique_ptr<rtb_ds> ds(new rtb_ds());
    ds->item = file->getDataset();
    ds->file = std::move(file);
    return ds;
}

bool lookup_tag(const char *keyword, DcmTag &tag, rtb_dicom_error *err)
{
    if (!keyword || !*keyword) {
        fail(err, RTB_DICOM_E_INVALID, "empty DICOM keyword");
        return false;
    }
    // findTagFromName accepts dictionary names and "gggg,eeee"; both are useful
    // (keywords for scripts, numeric tags for private elements). It finds a name by
    // walking the whole dictionary (~0.4 ms, more than building a small record), and
    // reads a number with sscanf and looks its VR up in the dictionary (under the
    // dictionary's lock): so every keyword and tag found is kept, with its VR. A
    // record builder appends hundreds of sequence items by tag.
    static std::mutex lock;
    static std::unordered_map<std::string, DcmTag> known;
    {
        std::lock_guard<std::mutex> hold(lock);
        auto it = known.find(keyword);
        if (it != known.end()) {
            tag = it->second;
            return true;
        }
    }
    if (DcmTag::findTagFromName(keyword, tag).bad()) {
        fail(err, RTB_DICOM_E_INVALID, "unknown DICOM keyword '%s'", keyword);
        return false;
    }
    // Kept as a look-up by key gives it (for a tag by number, what findTagFromName
    // gave): the same for every later call. Bounded: scripts name a few hundred.
    DcmTag kept(DcmTagKey(tag.getGroup(), tag.getElement()));
    std::lock_guard<std::mutex> hold(lock);
    if (known.size() < 65536) known.emplace(keyword, kept);
    return true;
}

} // namespace rtb

using namespace rtb;

extern "C" int rtb_ds_new(rtb_ds **out, rtb_dicom_error *err)
{
    clear_error(err);
    *out = nullptr;
    if (!ensure_init(err)) return -1;
    *out = make_root(std::unique_ptr<DcmFileFormat>(new DcmFileFormat())).release();
    return 0;
}

extern "C" int rtb_ds_read(const char *path, rtb_ds **out, rtb_dicom_error *err)
{
    clear_error(err);
    *out = nullptr;
    if (!ensure_init(err)) return -1;
    if (!path || !*path) return fail(err, RTB_DICOM_E_INVALID, "no file name given");
    struct stat st;
    if (stat(path, &st) != 0)
        return fail(err, RTB_DICOM_E_IO, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return fail(err, RTB_DICOM_E_IO, "%s: not a regular file", path);

    std::unique_ptr<DcmFileFormat> ff(new DcmFileFormat());
    OFCondition cond = ff->loadFile(path, EXS_Unknown, EGL_noChange, DCM_MaxReadLength,
                                    ERM_autoDetect);
    if (cond.bad())
        return fail(err, RTB_DICOM_E_IO, "%s: not a readable DICOM file (%s)", path, cond.text());
    // Auto-detection happily parses some non-DICOM files as a bare dataset; one
    // without a meta header must at least name its SOP class to count as DICOM.
    DcmMetaInfo *meta = ff->getMetaInfo();
    bool has_meta = meta && meta->card() > 0;
    if (!has_meta) {
        OFString sop_class;
        if (ff->getDataset()->findAndGetOFString(DCM_SOPClassUID, sop_class).bad() ||
            sop_class.empty())
            return fail(err, RTB_DICOM_E_IO, "%s: not a DICOM file (no meta header, no SOP Class UID)",
                        path);
    }
    *out = make_root(std::move(ff)).release();
    return 0;
}

extern "C" int rtb_ds_parse(const void *bytes, size_t len, const char *name, rtb_ds **out, rtb_dicom_error *err)
{
    clear_error(err);
    *out = nullptr;
    if (!ensure_init(err)) return -1;
    if (!name) name = "the data";
    if (!bytes || len == 0) return fail(err, RTB_DICOM_E_IO, "%s: empty, not a DICOM file", name);
    std::unique_ptr<DcmFileFormat> ff(new DcmFileFormat());
    DcmInputBufferStream in;
    in.setBuffer(bytes, OFstatic_cast(offile_off_t, len));
    in.setEos();
    ff->transferInit();
    OFCondition cond = ff->read(in, EXS_Unknown, EGL_noChange, DCM_MaxReadLength);
    ff->transferEnd();
    if (cond.bad()) return fail(err, RTB_DICOM_E_IO, "%s: not a readable DICOM file (%s)", name, cond.text());
    // As rtb_ds_read: without a meta header, a dataset must name its SOP class.
    DcmMetaInfo *meta = ff->getMetaInfo();
    OFString sop_class;
    if (!(meta && meta->card() > 0) &&
        (ff->getDataset()->findAndGetOFString(DCM_SOPClassUID, sop_class).bad() || sop_class.empty()))
        return fail(err, RTB_DICOM_E_IO, "%s: not a DICOM file (no meta header, no SOP Class UID)", name);
    *out = make_root(std::move(ff)).release();
    return 0;
}

extern "C" int rtb_ds_clone(const rtb_ds *ds, rtb_ds **out, rtb_dicom_error *err)
{
    clear_error(err);
    *out = nullptr;
    if (!ensure_init(err)) return -1;
    if (!ds) return fail(err, RTB_DICOM_E_INVALID, "no dataset");
    std::unique_ptr<DcmFileFormat> ff;
    if (ds->file) {
        ff.reset(new DcmFileFormat(*ds->file));
    } else if (DcmDataset *d = ds->dataset()) {
        // A borrowed dataset (a C-FIND match, a C-GET instance): the copy keeps
        // the transfer syntax it arrived in.
        ff.reset(new DcmFileFormat(d, OFTrue));
    } else {
        // A sequence item: copy its elements into a new root.
        ff.reset(new DcmFileFormat());
        DcmItem *src = ds->item;
        DcmDataset *dst = ff->getDataset();
        for (DcmObject *o = src->nextInContainer(nullptr); o; o = src->nextInContainer(o)) {
            DcmElement *e = OFstatic_cast(DcmElement *, o);
            if (dst->insert(OFstatic_cast(DcmElement *, e->clone()), OFTrue).bad())
                return fail(err, RTB_DICOM_E_INTERNAL, "cannot copy element %s",
                            e->getTag().toString().c_str());
        }
    }
    *out = make_root(std::move(ff)).release();
    return 0;
}

extern "C" void rtb_ds_free(rtb_ds *ds)
{
    if (!ds || ds->borrowed) return;
    delete ds;
}

extern "C" int rtb_ds_save(rtb_ds *ds, const char *path, const rtb_ds_save_options *opts,
                           rtb_dicom_error *err)
{
    clear_error(err);
    if (!ensure_init(err)) return -1;
    if (!ds || !path || !*path) return fail(err, RTB_DICOM_E_INVALID, "no dataset or path");
    rtb_ds_xfer want = opts ? opts->transfer_syntax : RTB_DS_XFER_AUTO;

    // Items and borrowed datasets have no file of their own: save a copy.
    std::unique_ptr<DcmFileFormat> copy;
    DcmFileFormat *ff = ds->file.get();
    if (!ff) {
        rtb_ds *c = nullptr;
        if (rtb_ds_clone(ds, &c, err) != 0) return -1;
        copy = std::move(c->file);
        delete c;
        ff = copy.get();
    }
    DcmDataset *dset = ff->getDataset();
    E_TransferSyntax xfer = EXS_LittleEndianExplicit;
    switch (want) {
    case RTB_DS_XFER_AUTO: {
        E_TransferSyntax orig = dset->getOriginalXfer();
        if (orig != EXS_Unknown) xfer = orig;
        break;
    }
    case RTB_DS_XFER_EXPLICIT_LE: xfer = EXS_LittleEndianExplicit; break;
    case RTB_DS_XFER_IMPLICIT_LE: xfer = EXS_LittleEndianImplicit; break;
    default: return fail(err, RTB_DICOM_E_INVALID, "unknown transfer syntax option %d", (int)want);
    }
    // Pixel data must be in a representation the target syntax can carry;
    // decompression uses the codecs registered in rtb_dicom_init().
    OFCondition cond = dset->chooseRepresentation(xfer, nullptr);
    if (cond.bad() || !dset->canWriteXfer(xfer))
        return fail(err, RTB_DICOM_E_INVALID, "cannot write %s in transfer syntax %s: %s", path,
                    DcmXfer(xfer).getXferName(), cond.bad() ? cond.text() : "not representable");
    return save_atomic(*ff, path, xfer, err) ? 0 : -1;
}

extern "C" int rtb_ds_dump(const rtb_ds *ds, size_t max_lines, char **out, rtb_dicom_error *err)
{
    clear_error(err);
    *out = nullptr;
    if (!ds) return fail(err, RTB_DICOM_E_INVALID, "no dataset");
    std::ostringstream os;
    ds->item->print(os, DCMTypes::PF_shortenLongTagValues);
    std::string text = os.str();
    if (max_lines > 0) {
        size_t pos = 0, lines = 0;
        while (pos < text.size() && lines < max_lines) {
            size_t nl = text.find('\n', pos);
            if (nl == std::string::npos) { pos = text.size(); break; }
            pos = nl + 1;
            lines++;
        }
        if (pos < text.size()) {
            size_t rest = 0;
            for (size_t i = pos; i < text.size(); i++) rest += text[i] == '\n';
            text.resize(pos);
            text += "... (" + std::to_string(rest) + " more lines)\n";
        }
    }
    char *buf = static_cast<char *>(malloc(text.size() + 1));
    if (!buf) return fail(err, RTB_DICOM_E_INTERNAL, "out of memory");
    memcpy(buf, text.c_str(), text.size() + 1);
    *out = buf;
    return 0;
}
