"""A synthetic brain-ageing cohort with known ground truth.

No UK Biobank scans can be used here, so we age a real average brain the way
the literature says brains age, and add the nuisance that registered real data
have. Because we choose which voxels carry age, we can *measure* whether an
importance map points at them.

Each subject has a chronological ``age`` and a biological ``brain_age`` =
age + gap, gap ~ N(0, ``gap_sd``); the scan is aged by ``brain_age``, so the
irreducible error of any predictor of chronological age is |gap|.

Starting point
    The ICBM152 2009a symmetric template (T1, GM, WM; see ``template``), an
    average of 152 young adults aged 18-44, mean 25.0 years (ICBM152 subject
    details as documented with SPM's templates). The template is taken to be
    a brain aged ``TEMPLATE_AGE`` = 25.

Ageing (driven by brain_age b; rates are % of the current volume per year,
constant at ``rate_early`` up to ``knee_age`` and rising linearly to
``rate_at_80`` at 80, so the volume factor is
exp(+/- [rate_early (b - 25) + slope/2 * max(0, b - knee)^2] / 100)):

* Lateral ventricles expand: 1.5 %/yr up to 45, rising to 3.5 %/yr at 80.
  Resnick et al. 2003 (J Neurosci 23:3295) measured +1.4 mL/yr at ages
  59-85, about 3-4 %/yr; total ventricular volume goes from 16.2 mL in the
  20s to 24.9 mL in the 40s (about 2 %/yr; Neurosci Lett 2006;395:155);
  expansion accelerates with age (Carmichael et al. 2007, Neurobiol Aging
  28:1316; Fjell et al. 2009, J Neurosci 29:15223). Net: about x3.2 at 80.
* Hippocampi atrophy: 0.3 %/yr up to 60, rising to 1.5 %/yr at 80.
  Fraser et al. 2021 (Neurobiol Aging 97:97): 0.18 %/yr at mean age 47,
  0.30 %/yr at 63; Fraser et al. 2015 (NeuroImage 112:364) meta-analysis:
  0.85 %/yr overall; Barnes et al. 2009 (Neurobiol Aging 30:1711): 1.41 %/yr
  in elderly controls; acceleration after 60-65 (Raz et al. 2005, Cereb
  Cortex 15:1676). Volume loss is made by a smooth shrinking deformation plus
  a partial-volume darkening of what remains: the tissue fraction lost is
  replaced by CSF, as the hippocampal fissure and temporal horn widen.
* Cortical grey matter thins diffusely by 0.35 %/yr (Storsve et al. 2014,
  J Neurosci 34:8488: -0.35 %/yr, ages 23-87; Shaw et al. 2016: -0.3 %/yr),
  simulated as a partial-volume shift of cortical GM intensity toward CSF in
  proportion to the thickness lost. Mild and everywhere in the cortex by
  design, it is written as its own mask and kept out of the focal union.
* Heterogeneous ageing (``region_age_sd``, off by default): each focal region
  is aged by its own age, brain_age + N(0, region_age_sd), drawn per subject
  and region. Real brains do not age in lockstep: tissue- and region-specific
  brain ages correlate only moderately within a person (Kaufmann et al. 2019,
  Nat Neurosci 22:1617). Off, every region reads out the same brain_age, so a
  predictor needs only the region it measures best (the ventricles); on, each
  region carries information the others do not.
* Other patterns (putamen, thalamus, caudate, amygdala) are available with an
  illustrative 0.3 -> 1.0 %/yr atrophy (half the lost fraction darkens);
  any region's rates can be changed.
* Cortical and peripheral regions (``CORTICAL_REGIONS``: frontal, parietal
  and temporal association cortex, insula, precuneus; Harvard-Oxford cortical
  labels, grey matter only) atrophy 0.3 %/yr up to 50, rising to 1.0-1.2 %/yr
  at 80: regional grey-matter loss of that order is reported in 65-82-year-olds
  (Crivello et al. 2014, PLoS One 9:e114478: -0.83 %/yr overall, fastest in
  frontal, parietal and temporal cortex), with association cortex shrinking
  faster with age (Raz et al. 2005). The peripheral ones (``PERIPHERAL_REGIONS``:
  frontal, parietal, temporal) are the outside case for importance maps: a map
  that only knows "deep = important" scores below chance there (the insula and
  precuneus lie as deep as the hippocampus by distance to the brain's edge).

Ground truth: per region, the voxels whose intensity that region's ageing
changes by more than 3 % of white matter between 45 and 80 (template space,
no nuisance), and their union; and, per subject (``ground_truth/subjects/``),
the union carried onto the subject's scan by the subject's nuisance warp, the
truth a subject's map is scored against (the template's union sits 1-2 voxels
off a subject's thin ventricle rims: a perfect subject map scores AP 0.53
against it).

Nuisance (independent of age, so neither head size nor pose leaks it), mimicking
affinely registered, skull-stripped data such as UK Biobank's T1_brain_to_MNI:
residual misregistration (rotations ~N(0, 2 deg) clipped at 5, translations
~N(0, 2 mm) clipped at 5, isotropic scale ~N(1, 0.02), per-axis scale
~N(1, 0.01)); a smooth random elastic field with RMS 1-2 mm; a multiplicative
bias field (smooth, about +/-10 %); global gamma 0.85-1.15 and gain 0.8-1.2;
Rician noise with sigma 1-3 % of white-matter intensity.

Other contrasts and resolutions (``render``; ``synth --contrast``,
``--slice-mm``): the same subject rendered from its tissue probabilities (the
template's GM, WM and CSF, aged like the T1: tissue lost becomes CSF; moved by
the same warps) with one intensity per tissue (T2-, PD-, FLAIR-like, or random
as in SynthSeg/SynthBA domain randomisation), and stored in thick slices. The
ageing, nuisance and truth are those of the T1 scan of the same seed.

Implementation: per subject, one stationary velocity field (sum over regions of
strength x the gradient of the Gaussian-smoothed region mask) is integrated by
scaling and squaring into a diffeomorphic ageing warp, composed with the
nuisance warp, and the template is resampled once (trilinear). The strength
that gives a region's target volume is read from a calibration table made once
per grid. Everything is vectorised numpy/scipy; each subject draws from its own
``SeedSequence`` child, so results do not depend on the number of workers.
"""
